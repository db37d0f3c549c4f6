#!/bin/bash
# The systemd guest's checks, run by airlock-checks.service once the guest
# (a Debian bookworm root with systemd as PID 1) is up. Each check is a named
# test that passes or fails on its own and is reported as the runner parses
# test results: `test NAME ... ok|FAILED|ignored (reason)`. What each check
# ran and saw is echoed above its result line (indented), so the console log
# is the transcript. The plan ($1, written by `cargo xtask vm-test`) sets
# BACKEND (lsm|compat) and REQUIRE_FDSTORE (1: the fd store check may not be
# skipped); the packages are in debs/ beside it.
set -u
. "$1"
share=$(dirname "$1")
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
work=/run/airlock-work
rm -rf "$work" && mkdir -p "$work/session"
failures=$work/failures
: > "$failures"
passed=0 failed=0 skipped=0

# Waits inside checks are scaled for TCG, like the kernel suites'
# (AIRLOCK_TEST_TIME_SCALE): a bound on how long to wait for what must
# happen, never a duration asserted.
scale=6
agent_unit=airlock-agent.service
gateway_unit=airlock-gateway.service
pin_dir=/sys/fs/bpf/airlock
gw_dir=/var/lib/airlock-gateway

say() { echo "airlock-vm: $*"; }
# Runs a command, showing it and what it printed; returns its status.
run() {
    echo "\$ $*"
    "$@"
}
# wait_until SECONDS DESCRIPTION COMMAND...: polls until COMMAND succeeds.
wait_until() {
    local limit=$(( $1 * scale )) what=$2 i
    shift 2
    for (( i = 0; i < limit * 2; i++ )); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    echo "gave up after ${limit} s waiting for: $what"
    return 1
}
prop() { systemctl show -p "$2" --value "$1"; }
# Active and running: for a Type=notify unit, only after READY=1.
running() { [ "$(prop "$1" ActiveState)/$(prop "$1" SubState)" = active/running ]; }
show_unit() { systemctl show -p Type -p ActiveState -p SubState -p MainPID -p NRestarts -p StatusText "$1" | sed 's/^/    /'; }
# The agent's main pid, or a failure when the unit has none: MainPID is 0
# when it is not running, and `kill -9 0` would end this script's own
# process group.
agent_main_pid() {
    local pid
    pid=$(prop "$agent_unit" MainPID)
    [ "${pid:-0}" -gt 1 ] || { echo "$agent_unit has no main process (MainPID=$pid)" >&2; show_unit "$agent_unit" >&2; return 1; }
    echo "$pid"
}
agent_journal() { journalctl -b -u "$agent_unit" --no-pager -o short-monotonic | tail -n "${1:-30}"; }

# check NAME FUNCTION: runs FUNCTION in this shell (checks share state) with
# its output captured, echoes it as the transcript, then the result line.
# FUNCTION returns 0 (passed), 77 (skipped; its last line is the reason) or
# anything else (failed).
check() {
    local name=$1 log="$work/$1.log" rc
    shift
    echo "--- $name"
    "$@" > "$log" 2>&1
    rc=$?
    sed 's/^/  | /' "$log"
    if [ "$rc" = 0 ]; then
        echo "test $name ... ok"
        passed=$((passed + 1))
    elif [ "$rc" = 77 ]; then
        echo "test $name ... ignored ($(tail -n 1 "$log"))"
        skipped=$((skipped + 1))
    else
        # The journal goes to the transcript as well: a guest that stops
        # before the end never prints the summary of failures.
        agent_journal 40 | sed 's/^/  | journal: /'
        echo "test $name ... FAILED"
        failed=$((failed + 1))
        { echo "---- systemd::$name ----"; cat "$log"; echo "(the agent's journal, last lines)"; agent_journal 40; echo; } >> "$failures"
    fi
}

# Program names loaded by the system before Airlock was installed (systemd
# loads its own cgroup programs): what is left of Airlock after a purge is
# judged against the names the agent added.
bpf_prog_names() { bpftool prog show 2>/dev/null | sed -n 's/^[0-9]*: [a-z_]*  name \([^ ]*\) .*/\1/p' | sort -u; }

# A governed session that lives across the daemon's restarts: it runs
# `terraform plan` (allowed) and `terraform -chdir=infra apply` (blocked by
# the shipped terraform-restricted-agent role) each time a probe number is
# written to its FIFO, and records each command's exit status and output.
start_session() {
    local s=$work/session
    mkfifo "$s/in"
    # Stand-in for the real tool, as scripts/demo.sh uses.
    printf '#!/bin/sh\necho "terraform stand-in ran: $*"\n' > /usr/local/bin/terraform
    chmod 755 /usr/local/bin/terraform
    setsid airlock-agent launch --role terraform-restricted-agent -- bash -c '
        s='"$s"'
        echo "$AIRLOCK_SESSION_ID" > $s/id.tmp && mv $s/id.tmp $s/id
        exec 3<>$s/in
        while read -r n <&3; do
            terraform plan > $s/plan.$n 2>&1; echo $? > $s/plan-rc.$n
            terraform -chdir=infra apply > $s/apply.$n 2>&1; echo $? > $s/apply-rc.$n.tmp
            mv $s/apply-rc.$n.tmp $s/apply-rc.$n
        done' > "$s/launch.log" 2>&1 < /dev/null &
    echo $! > "$s/launch.pid"
    wait_until 30 "the governed session to start" test -s "$s/id" || { cat "$s/launch.log"; return 1; }
    echo "governed session $(cat "$s/id") (launch pid $(cat "$s/launch.pid"))"
}
probes=0
# probe_blocked WHEN: the session's plan runs and its apply does not.
probe_blocked() {
    local s=$work/session n
    probes=$((probes + 1))
    n=$probes
    # Bounded: with the session gone, nothing would ever read the FIFO.
    timeout $((30 * scale)) sh -c "echo $n > $s/in" || { echo "the session does not read its FIFO"; cat "$s/launch.log"; return 1; }
    wait_until 30 "the session to run probe $n ($1)" test -f "$s/apply-rc.$n" || { cat "$s/launch.log"; return 1; }
    echo "probe $n ($1): terraform plan -> exit $(cat "$s/plan-rc.$n"): $(cat "$s/plan.$n")"
    echo "probe $n ($1): terraform -chdir=infra apply -> exit $(cat "$s/apply-rc.$n"): $(cat "$s/apply.$n")"
    grep -q "terraform stand-in ran: plan" "$s/plan.$n" || { echo "the allowed terraform plan did not run"; return 1; }
    if grep -q "stand-in ran" "$s/apply.$n" || [ "$(cat "$s/apply-rc.$n")" = 0 ]; then
        echo "terraform apply RAN in the governed session ($1)"
        return 1
    fi
}
# The session's deny of `terraform -chdir=infra apply` is in the audit trail.
denied_in_audit() {
    local id
    id=$(cat "$work/session/id")
    grep -F "\"$id\"" /var/lib/airlock/audit.jsonl | grep -F '"decision":"deny"' | grep -F '"apply"' | tail -n 1
}
agent_backend() { airlock-agent status 2>/dev/null | sed -n 's/^backend: *\([a-z]*\).*/\1/p'; }
enforcing() {
    running "$agent_unit" || return 1
    [ "$(agent_backend)" = "$BACKEND" ]
}

t_install() {
    bpf_prog_names > "$work/progs-before"
    run dpkg -i "$share"/debs/airlock-agent_*_amd64.deb "$share"/debs/airlock-gateway_*_amd64.deb || return 1
    run dpkg-query -W -f='${Package} ${Version} ${Status}\n' airlock-agent airlock-gateway || return 1
    [ "$(dpkg-query -W -f='${Status}' airlock-agent)" = "install ok installed" ] &&
        [ "$(dpkg-query -W -f='${Status}' airlock-gateway)" = "install ok installed" ]
}

t_ready() {
    run systemctl is-enabled "$agent_unit"
    wait_until 60 "$agent_unit active/running (READY=1)" running "$agent_unit" || { show_unit "$agent_unit"; return 1; }
    show_unit "$agent_unit"
    [ "$(prop "$agent_unit" Type)" = notify ] || { echo "the unit is not Type=notify"; return 1; }
    run airlock-agent status | head -n 8
    [ "$(agent_backend)" = "$BACKEND" ] || { echo "the daemon runs the $(agent_backend) backend, this guest expects $BACKEND"; return 1; }
    bpf_prog_names | comm -13 "$work/progs-before" - > "$work/progs-ours"
    echo "programs the agent loaded: $(tr '\n' ' ' < "$work/progs-ours")"
    [ -s "$work/progs-ours" ] || { echo "bpftool shows no program the agent added"; return 1; }
    run ls "$pin_dir"
}

# The watchdog: a drop-in with a short WatchdogSec. systemd records when it
# last got WATCHDOG=1 (WatchdogTimestamp); over several periods it must move
# on while MainPID and NRestarts stay. A daemon that did not feed the
# watchdog would be killed (SIGABRT) after one period and restarted.
t_watchdog() {
    local dropin=/etc/systemd/system/$agent_unit.d
    mkdir -p "$dropin"
    printf '[Service]\nWatchdogSec=4s\n' > "$dropin/50-watchdog-check.conf"
    run systemctl daemon-reload || return 1
    run systemctl restart "$agent_unit" || return 1
    wait_until 60 "$agent_unit running again" running "$agent_unit" || return 1
    local pid restarts first last i
    pid=$(prop "$agent_unit" MainPID)
    restarts=$(prop "$agent_unit" NRestarts)
    echo "WatchdogUSec=$(prop "$agent_unit" WatchdogUSec) MainPID=$pid NRestarts=$restarts"
    [ "$(prop "$agent_unit" WatchdogUSec)" = 4s ] || { echo "the drop-in's WatchdogSec is not in force"; return 1; }
    first=$(prop "$agent_unit" WatchdogTimestampMonotonic)
    # Five periods: without pings systemd would have killed it four times over.
    for i in 1 2 3 4 5; do
        sleep 4
        last=$(prop "$agent_unit" WatchdogTimestampMonotonic)
        echo "after period $i: last ping at ${last} us (monotonic), MainPID $(prop "$agent_unit" MainPID), NRestarts $(prop "$agent_unit" NRestarts)"
    done
    local verdict=0
    if journalctl -b -u "$agent_unit" --no-pager | grep -i "watchdog timeout"; then
        echo "systemd reported a watchdog timeout"
        verdict=1
    fi
    [ "$(prop "$agent_unit" MainPID)" = "$pid" ] && [ "$(prop "$agent_unit" NRestarts)" = "$restarts" ] || { echo "the daemon was restarted during the watchdog periods"; verdict=1; }
    [ "$first" != 0 ] && [ "$last" -gt "$first" ] || { echo "systemd got no watchdog ping in five periods (first $first, last $last)"; verdict=1; }
    # Back to the packaged WatchdogSec for the later checks: the running
    # daemon pings at the interval it started with, and a guest starved of
    # CPU can miss a 4 s deadline where the packaged 30 s holds.
    rm -f "$dropin/50-watchdog-check.conf"
    run systemctl daemon-reload || return 1
    run systemctl restart "$agent_unit" || return 1
    wait_until 60 "$agent_unit running with the packaged watchdog" running "$agent_unit" || return 1
    echo "WatchdogUSec=$(prop "$agent_unit" WatchdogUSec) after the drop-in is removed"
    return "$verdict"
}

t_blocked() {
    start_session || return 1
    probe_blocked "daemon running" || return 1
    wait_until 30 "the deny in /var/lib/airlock/audit.jsonl" denied_in_audit || return 1
    echo "audit: $(denied_in_audit)"
}

t_restart() {
    local before after
    before=$(prop "$agent_unit" MainPID)
    run systemctl restart "$agent_unit" || return 1
    wait_until 60 "$agent_unit running after the restart" running "$agent_unit" || return 1
    after=$(prop "$agent_unit" MainPID)
    echo "MainPID $before -> $after"
    [ "$after" != "$before" ] || { echo "MainPID did not change: not restarted"; return 1; }
    run airlock-agent sessions | grep -F "$(cat "$work/session/id")" || { echo "the restarted daemon does not list the session"; return 1; }
    probe_blocked "after systemctl restart" || return 1
}

t_stop() {
    run systemctl stop "$agent_unit" || return 1
    run systemctl is-active "$agent_unit"
    [ "$(prop "$agent_unit" ActiveState)" = inactive ] || { echo "the unit is not inactive after stop"; return 1; }
    [ -d "$pin_dir" ] || { echo "$pin_dir is gone after stop"; return 1; }
    probe_blocked "daemon stopped" || return 1
    run systemctl start "$agent_unit" || return 1
    wait_until 60 "$agent_unit running after start" enforcing || return 1
    probe_blocked "after start" || return 1
}

t_kill9() {
    local before restarts after
    before=$(agent_main_pid) || return 1
    restarts=$(prop "$agent_unit" NRestarts)
    run kill -9 "$before" || return 1
    wait_until 60 "a new MainPID after kill -9" sh -c "p=\$(systemctl show -p MainPID --value $agent_unit); [ \$p != 0 ] && [ \$p != $before ]" || return 1
    wait_until 60 "$agent_unit running and enforcing after the restart" enforcing || return 1
    after=$(prop "$agent_unit" MainPID)
    echo "MainPID $before -> $after, NRestarts $restarts -> $(prop "$agent_unit" NRestarts)"
    [ "$(prop "$agent_unit" NRestarts)" -gt "$restarts" ] || { echo "NRestarts did not go up: systemd did not restart it"; return 1; }
    probe_blocked "after kill -9 and systemd's restart" || return 1
}

# compat keeps its links and maps alive in systemd's fd store: with the pins
# removed while the daemon is dead, enforcement holds, and the next daemon
# takes the descriptors back and pins them again.
t_fdstore() {
    local max before dropin=/etc/systemd/system/$agent_unit.d
    max=$(prop "$agent_unit" FileDescriptorStoreMax)
    if [ "${max:-0}" = 0 ]; then
        echo "the agent's unit keeps no descriptors in systemd's store (FileDescriptorStoreMax=0)"
        [ "$REQUIRE_FDSTORE" = 1 ] && return 1
        echo "the packaged unit has no fd store"
        return 77
    fi
    # Time to remove the pins before systemd starts the next daemon.
    mkdir -p "$dropin"
    printf '[Service]\nRestartSec=20s\n' > "$dropin/50-fdstore-check.conf"
    systemctl daemon-reload
    run systemctl show -p FileDescriptorStoreMax -p NFileDescriptorStore "$agent_unit"
    before=$(agent_main_pid) || return 1
    run kill -9 "$before" || return 1
    run rm -rf "$pin_dir" || return 1
    [ ! -e "$pin_dir" ] || { echo "the pins are still there"; return 1; }
    probe_blocked "daemon killed, pins removed" || return 1
    rm -f "$dropin/50-fdstore-check.conf"
    systemctl daemon-reload
    wait_until 90 "the next daemon running and enforcing" enforcing || return 1
    echo "MainPID $before -> $(prop "$agent_unit" MainPID)"
    run ls "$pin_dir" || { echo "the restarted daemon did not pin again"; return 1; }
    probe_blocked "after the restart took the descriptors back" || return 1
}

# As /etc/default/airlock-agent documents it: the gateway in
# AIRLOCK_AGENT_OPTS, the join token beside it (needed for the first start).
configure_agent_for_gateway() {
    local url=$1 token=$2 ca=$3
    install -m 0644 "$ca" /etc/airlock/gateway-ca.pem || return 1
    sed -i -e "s|^AIRLOCK_AGENT_OPTS=.*|AIRLOCK_AGENT_OPTS=\"--gateway $url --gateway-ca /etc/airlock/gateway-ca.pem\"|" \
        -e "s|^#AIRLOCK_JOIN_TOKEN=.*|AIRLOCK_JOIN_TOKEN=$token|" /etc/default/airlock-agent || return 1
    echo "/etc/default/airlock-agent ($(stat -c '%U:%G %a' /etc/default/airlock-agent)):"
    grep -v '^#' /etc/default/airlock-agent | grep . | sed 's/alk_join_[A-Za-z0-9_-]*/alk_join_.../'
    grep -q "^AIRLOCK_AGENT_OPTS=\"--gateway $url" /etc/default/airlock-agent && grep -q "^AIRLOCK_JOIN_TOKEN=alk_join_" /etc/default/airlock-agent ||
        { echo "/etc/default/airlock-agent does not have the lines it documents"; return 1; }
}

t_gateway() {
    run systemctl start "$gateway_unit" || return 1
    wait_until 60 "$gateway_unit running" running "$gateway_unit" || { show_unit "$gateway_unit"; journalctl -b -u "$gateway_unit" --no-pager | tail -n 20; return 1; }
    wait_until 60 "the gateway's URL and admin token in $gw_dir" sh -c "airlock-gateway hosts --data-dir $gw_dir" || return 1
    run ls "$gw_dir"
    local db found=""
    for db in "$gw_dir"/*.db; do
        [ "$(head -c 15 "$db" 2>/dev/null)" = "SQLite format 3" ] && found=$db
    done
    [ -n "$found" ] || { echo "no SQLite database in $gw_dir"; return 1; }
    echo "the gateway's store: $found (SQLite)"
    local token
    token=$(airlock-gateway token create --join --uses 1 --ttl 1h --data-dir "$gw_dir") || return 1
    echo "join token ${token:0:13}..."
    configure_agent_for_gateway "$(cat "$gw_dir/url")" "$token" "$gw_dir/ca.pem" || return 1
    run systemctl restart "$agent_unit" || return 1
    wait_until 60 "$agent_unit running with the gateway" enforcing || return 1
    wait_until 60 "the gateway listing host $(hostname)" sh -c "airlock-gateway hosts --json --data-dir $gw_dir | grep -F '\"$(hostname)\"'" || return 1
    run airlock-gateway hosts --data-dir "$gw_dir"
    probe_blocked "enrolled with the gateway" || return 1
}

t_purge() {
    kill "$(cat "$work/session/launch.pid")" 2>/dev/null
    # The checks' own files: the gateway's CA given to the agent, the drop-in directory.
    rm -rf /etc/airlock/gateway-ca.pem "/etc/systemd/system/$agent_unit.d"
    run dpkg --purge airlock-gateway airlock-agent || return 1
    local left=0 p
    echo "\$ bpftool prog show (names)"
    bpf_prog_names | sed 's/^/    /'
    for p in $(cat "$work/progs-ours"); do
        bpf_prog_names | grep -qx "$p" && { echo "program $p is still loaded"; left=1; }
    done
    [ -e "$pin_dir" ] && { echo "pins left: $(ls -R "$pin_dir")"; left=1; }
    getent group airlock && { echo "the airlock group is left"; left=1; }
    for d in /var/lib/airlock /run/airlock /etc/airlock "$gw_dir" /etc/default/airlock-agent; do
        [ -e "$d" ] && { echo "left behind: $d"; ls -la "$d"; left=1; }
    done
    for u in "$agent_unit" "$gateway_unit"; do
        [ "$(prop "$u" LoadState)" = not-found ] || { echo "$u is still known to systemd ($(prop "$u" LoadState))"; left=1; }
    done
    dpkg-query -W airlock-agent airlock-gateway 2>&1 | grep -v "no packages found" && { echo "dpkg still knows a package"; left=1; }
    [ "$left" = 0 ]
}

say "systemd $(systemctl --version | head -n 1 | cut -d' ' -f2) is PID 1 ($(cat /proc/1/comm)); kernel $(uname -r); lsm=$(cat /sys/kernel/security/lsm); backend expected: $BACKEND"
echo "AIRLOCK-VM-SUITE=systemd"
check install_both_packages t_install
check agent_ready_under_type_notify t_ready
check watchdog_is_fed t_watchdog
check governed_session_is_blocked_and_audited t_blocked
check restart_readopts_the_session t_restart
check stop_leaves_enforcement_in_force t_stop
check kill9_is_restarted_by_systemd t_kill9
[ "$BACKEND" = compat ] && check fdstore_keeps_enforcement_without_pins t_fdstore
check gateway_on_sqlite_enrolls_the_agent t_gateway
check purge_leaves_nothing t_purge

if [ "$failed" != 0 ]; then
    echo
    echo "failures:"
    cat "$failures"
fi
result=ok
[ "$failed" = 0 ] || result=FAILED
echo "test result: $result. $passed passed; $failed failed; $skipped ignored; 0 measured; 0 filtered out"
echo "AIRLOCK-VM-EXIT=$([ "$failed" = 0 ] && echo 0 || echo 1)"
sync
systemctl poweroff --force
