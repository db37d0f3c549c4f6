#!/usr/bin/env bash
# Sets up what is missing, builds Airlock, and shows a one-machine fleet: a
# gateway on SQLite, the local agent enrolled with a join token, the shipped
# policies/ pushed as the fleet's first policy version, and a governed demo
# session whose denies are then queried from the gateway. With --keep the
# gateway and the daemon stay running afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
. ./scripts/setup.sh

keep=0
[ "${1:-}" = "--keep" ] && keep=1

echo "demo: building airlock-agent and airlock-gateway (release)"
cargo build --release --locked -p airlock-agent -p airlock-gateway
agent="$PWD/target/release/airlock-agent"
gateway="$PWD/target/release/airlock-gateway"

demo=$(mktemp -d /tmp/airlock-demo.XXXXXX)
socket="$demo/agent.sock"
gwdir="$demo/gateway"
mkdir -p "$demo/bin" "$demo/state"
# Stand-ins for the real tools, so the demo needs no cloud credentials.
for tool in terraform kubectl; do
    printf '#!/bin/sh\necho "  ($(basename "$0") stand-in) ran: %s $*"\n' "$tool" > "$demo/bin/$tool"
    sed -i "s/\$(basename \"\$0\")/$tool/" "$demo/bin/$tool"
    chmod +x "$demo/bin/$tool"
done
gw() { "$gateway" "$@" --data-dir "$gwdir"; }

daemon=""
gateway_pid=""
stop() {
    if [ "$keep" = 0 ]; then
        if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then
            kill -TERM "$daemon"; wait "$daemon" || true
            echo "demo: daemon stopped; enforcement detached."
        fi
        if [ -n "$gateway_pid" ] && kill -0 "$gateway_pid" 2>/dev/null; then
            kill -TERM "$gateway_pid"; wait "$gateway_pid" || true
            echo "demo: gateway stopped. Files kept in $demo"
        fi
    fi
}
trap stop EXIT

# A free loopback port for the gateway.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "demo: starting the gateway on https://127.0.0.1:$port with its Control Room on a free port, SQLite in $gwdir (log: $demo/gateway.log)"
"$gateway" run --data-dir "$gwdir" --listen "127.0.0.1:$port" --ui-listen 127.0.0.1:0 2>"$demo/gateway.log" &
gateway_pid=$!
for _ in $(seq 1 100); do
    [ -f "$gwdir/url" ] && gw hosts >/dev/null 2>&1 && break
    sleep 0.1
done

ui_password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
echo "demo: a Control Room admin 'demo' (password in $demo/ui-password)"
printf '%s\n' "$ui_password" > "$demo/ui-password"
chmod 600 "$demo/ui-password"
printf '%s\n' "$ui_password" | gw user create --username demo --role admin --password-stdin >/dev/null

echo "demo: a join token for this host (one use, 1 hour)"
join=$(gw token create --join --uses 1 --ttl 1h 2>/dev/null)

echo "demo: starting the daemon, enrolled with the gateway as host 'demo' (log: $demo/daemon.log)"
# Its own pin directory, released on stop: the demo leaves no enforcement behind.
"$agent" run --gateway "https://127.0.0.1:$port" --join-token "$join" --gateway-ca "$gwdir/ca.pem" --host-id demo \
    --state-dir "$demo/state" --socket "$socket" --pin-dir "/sys/fs/bpf/airlock-demo-$$" --release-on-exit 2>"$demo/daemon.log" &
daemon=$!
for _ in $(seq 1 100); do
    "$agent" status --socket "$socket" >/dev/null 2>&1 && break
    sleep 0.1
done

echo
echo "demo: pushing the shipped policies/ as the fleet's policy"
gw policy push policies --comment "the shipped policies"
for _ in $(seq 1 100); do
    gw hosts --json | python3 -c 'import json,sys; h=json.load(sys.stdin)["hosts"]; sys.exit(0 if h and h[0]["enforced_version"] >= 1 else 1)' && break
    sleep 0.2
done
echo
echo "$ airlock-gateway hosts     (the rollout: which version each host enforces)"
gw hosts

echo
echo "demo: a governed session with role terraform-restricted-agent"
session_file="$demo/session-id"
PATH="$demo/bin:$PATH" "$agent" launch --socket "$socket" --role terraform-restricted-agent -- bash -c '
    set +e
    echo "$AIRLOCK_SESSION_ID" > '"$session_file"'
    echo "$ terraform plan";                 terraform plan;                 echo "  exit $?"
    echo "$ terraform -chdir=infra apply";   terraform -chdir=infra apply;   echo "  exit $? (killed by Airlock before it ran)"
    echo "$ env terraform destroy";          env terraform destroy;          echo "  exit $?"
    echo "$ kubectl --context prod delete pod x"; kubectl --context prod delete pod x; echo "  exit $?"
    echo "$ kubectl get pods";               kubectl get pods;               echo "  exit $?"
' 2>&1 | grep -v "Killed"
session=$(cat "$session_file")

echo
echo "$ airlock-gateway decisions --session $session --decision deny     (queried from the gateway)"
for _ in $(seq 1 50); do
    [ "$(gw decisions --session "$session" --decision deny --json | wc -l)" -ge 3 ] && break
    sleep 0.2
done
gw decisions --session "$session" --decision deny

echo
echo "demo: approvals. Version 2 adds a policy whose approval_commands hold 'terraform apply' in the kernel"
echo "      until a person approves it, and a role that uses it."
v2="$demo/policy-v2"
cp -r policies "$v2"
cat > "$v2/policies/infra-approvals.json" <<'JSON'
{ "id": "infra-approvals", "name": "Infrastructure changes need a person", "approval_commands": ["terraform apply"] }
JSON
cat > "$v2/roles/terraform-approvals-agent.json" <<'JSON'
{ "id": "terraform-approvals-agent", "name": "Terraform agent with approvals",
  "policies": ["infra-approvals", "cloud-metadata-block", "broker-escape-block"] }
JSON
gw policy push "$v2" --comment "terraform apply needs a person's approval"
for _ in $(seq 1 100); do
    gw hosts --json | python3 -c 'import json,sys; h=json.load(sys.stdin)["hosts"]; sys.exit(0 if h and h[0]["enforced_version"] >= 2 else 1)' && break
    sleep 0.2
done
echo "demo: a governed session runs terraform apply, is held, and retries until a person decides"
held_out="$demo/held-session.out"
PATH="$demo/bin:$PATH" "$agent" launch --socket "$socket" --role terraform-approvals-agent -- bash -c '
    set +e
    echo "$ terraform apply";  terraform apply;  echo "  exit $? (held until a person approves)"; sleep 1
    exec 2>/dev/null   # the retries are quiet: each one names the same pending request
    for _ in $(seq 1 240); do sleep 0.5; terraform apply && { echo "  (the retry after the approval ran)"; break; }; done
    echo "$ terraform apply     (again: a one-shot grant serves one run)"
    terraform apply; echo "  exit $?"
' > "$held_out" 2>&1 &
held_session=$!
request=""
for _ in $(seq 1 100); do
    request=$(gw approvals list --state pending --json | python3 -c 'import json,sys; a=json.load(sys.stdin).get("approvals", []); print(a[0]["request"]["id"] if a else "")')
    [ -n "$request" ] && break
    sleep 0.2
done
echo
echo "$ airlock-gateway approvals list --state pending"
gw approvals list --state pending
echo "$ airlock-gateway approvals approve $request --reason \"change 42, reviewed\""
gw approvals approve "$request" --reason "change 42, reviewed"
echo "$ airlock-gateway approvals wait $request"
gw approvals wait "$request" --timeout 60s | head -3
wait "$held_session" || true
echo
echo "demo: the session's own output"
grep -v "Killed" "$held_out"

echo
echo "$ airlock-agent status     (the agent's link to the gateway)"
"$agent" status --socket "$socket" | sed -n '/^gateway:/,$p'
echo
echo "demo: the Control Room is at $(cat "$gwdir/ui-url") (user demo, password in $demo/ui-password;"
echo "      the certificate is the gateway's own: $gwdir/ca.pem). Run with --keep to leave it up."

if [ "$keep" = 1 ]; then
    echo
    echo "demo: the gateway (pid $gateway_pid) and the daemon (pid $daemon) keep running."
    echo "      try: $gateway hosts --data-dir $gwdir"
    echo "           PATH=$demo/bin:\$PATH $agent launch --socket $socket -- bash"
fi
