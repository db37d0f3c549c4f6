#!/usr/bin/env bash
# Sets up what is missing, builds Airlock, starts the daemon with the shipped
# policies/ (compiled in as the embedded default) and runs a governed demo
# session. With --keep the daemon stays running afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
. ./scripts/setup.sh

keep=0
[ "${1:-}" = "--keep" ] && keep=1

echo "demo: building airlock-agent (release)"
cargo build --release --locked -p airlock-agent
agent="$PWD/target/release/airlock-agent"

demo=$(mktemp -d /tmp/airlock-demo.XXXXXX)
socket="$demo/agent.sock"
mkdir -p "$demo/bin" "$demo/state"
# Stand-ins for the real tools, so the demo needs no cloud credentials.
for tool in terraform kubectl; do
    printf '#!/bin/sh\necho "  ($(basename "$0") stand-in) ran: %s $*"\n' "$tool" > "$demo/bin/$tool"
    sed -i "s/\$(basename \"\$0\")/$tool/" "$demo/bin/$tool"
    chmod +x "$demo/bin/$tool"
done

echo "demo: starting the daemon (log: $demo/daemon.log)"
# Its own pin directory, released on stop: the demo leaves no enforcement behind.
"$agent" run --embedded-policy --state-dir "$demo/state" --socket "$socket" \
    --pin-dir "/sys/fs/bpf/airlock-demo-$$" --release-on-exit 2>"$demo/daemon.log" &
daemon=$!
stop() {
    if [ "$keep" = 0 ] && kill -0 "$daemon" 2>/dev/null; then
        kill -TERM "$daemon"
        wait "$daemon" || true
        echo "demo: daemon stopped; enforcement detached. Files kept in $demo"
    fi
}
trap stop EXIT
for _ in $(seq 1 100); do
    "$agent" status --socket "$socket" >/dev/null 2>&1 && break
    sleep 0.1
done

echo
echo "demo: a governed session with role terraform-restricted-agent"
PATH="$demo/bin:$PATH" "$agent" launch --socket "$socket" --role terraform-restricted-agent -- bash -c '
    set +e
    echo "$ terraform plan";                 terraform plan;                 echo "  exit $?"
    echo "$ terraform -chdir=infra apply";   terraform -chdir=infra apply;   echo "  exit $? (killed by Airlock before it ran)"
    echo "$ env terraform destroy";          env terraform destroy;          echo "  exit $?"
    echo "$ kubectl --context prod delete pod x"; kubectl --context prod delete pod x; echo "  exit $?"
    echo "$ kubectl get pods";               kubectl get pods;               echo "  exit $?"
    echo
    echo "$ airlock-agent status   (from inside the session)"
    '"$agent"' status --socket '"$socket"'
' 2>&1 | grep -v "Killed"

echo
echo "demo: the audit trail ($demo/state/audit.jsonl), denies:"
sleep 0.5
grep '"decision":"deny"' "$demo/state/audit.jsonl" | python3 -c '
import json, sys
for line in sys.stdin:
    d = json.loads(line)
    print("  {time}  {decision:5}  {rule:<20}  {policy:<22}  argv={argv}".format(
        time=d["time"][:23], decision=d["decision"], rule=d.get("rule") or d["reason"],
        policy=d.get("policy") or "-", argv=" ".join(d["argv"])))'

if [ "$keep" = 1 ]; then
    echo
    echo "demo: the daemon keeps running (pid $daemon, socket $socket)."
    echo "      try: PATH=$demo/bin:\$PATH $agent launch --socket $socket -- bash"
fi
