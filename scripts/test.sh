#!/usr/bin/env bash
# Sets up what is missing, then runs every test:
#  1. cargo xtask test: unit, ABI layout, policy and kernel tests (as root, on
#     this kernel), then a check that the kernel is left clean, then the
#     Kubernetes manifests rendered and validated offline, then the .deb
#     packages from that build, checked with lintian;
#  2. cargo xtask vm-test: the kernel tests again inside Debian's 6.1 and 6.12
#     kernels under qemu, with the LSM backend and with the compat backend,
#     and the .deb packages in a Debian guest with systemd as PID 1 (both
#     backends), the guests side by side (vm-tests/matrix.toml).
# At the end (pass or fail) it prints the wall time of each phase.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target
export AIRLOCK_PHASES_FILE="$PWD/target/test-phases.tsv"
: > "$AIRLOCK_PHASES_FILE"
run_started=$(date +%s)
print_phases() {
    local rc=$?
    echo
    echo "test: phases (wall time)"
    while IFS=$'\t' read -r name seconds; do
        printf '  %-52s %6s s\n' "$name" "$seconds"
    done < "$AIRLOCK_PHASES_FILE"
    printf '  %-52s %6s s\n' "total" "$(( $(date +%s) - run_started ))"
    exit $rc
}
trap print_phases EXIT

t=$(date +%s)
. ./scripts/setup.sh
printf 'setup: install what is missing\t%s\n' "$(( $(date +%s) - t ))" >> "$AIRLOCK_PHASES_FILE"
# The gateway's PostgreSQL tests start a temporary cluster of Debian's server
# (installed above); here they must run, never skip.
export AIRLOCK_REQUIRE_POSTGRES=1
# The notification email tests run a real SMTP server, Debian's
# python3-aiosmtpd (installed above); the same rule.
export AIRLOCK_REQUIRE_SMTP=1
# The MCP bridge's tests drive it with the official MCP Python SDK, in the
# venv setup.sh makes; the same rule.
export AIRLOCK_REQUIRE_PYTHON_MCP=1
# The export tests validate OCSF lines and receive OTLP logs in that venv
# (ocsf-json-schema, opentelemetry-proto); the same rule.
export AIRLOCK_REQUIRE_PYTHON_EXPORT=1
# The metrics tests parse scrapes with the official Prometheus Python client,
# in the same venv; the same rule.
export AIRLOCK_REQUIRE_PYTHON_METRICS=1
# The gateway's OIDC test signs in against oidc-provider on node, which
# setup.sh installs under target/oidc-provider; the same rule.
export AIRLOCK_REQUIRE_OIDC=1
# The Control Room's browser test drives Debian's chromium with Playwright
# (both installed above); the same rule.
export AIRLOCK_REQUIRE_BROWSER=1
# The Kubernetes manifests are rendered with kubectl and validated with
# kubernetes-validate (both installed above); the same rule.
export AIRLOCK_REQUIRE_KUBECTL=1
# The packages' test builds real .deb files with dpkg-deb and reads them back
# (dpkg-dev and lintian, installed above); the same rule.
export AIRLOCK_REQUIRE_PACKAGE=1
# The systemd guests' fd store check (compat: enforcement without pins while
# the daemon is down) must run, never skip: the packaged unit keeps the fds.
export AIRLOCK_REQUIRE_FDSTORE=1
echo "test: kernel $(uname -r); running cargo xtask test"
cargo xtask test
echo "test: running cargo xtask vm-test (Debian 6.1 and 6.12, LSM and compat backends; the packages under systemd)"
cargo xtask vm-test
