#!/bin/bash
# The guest's second stage, run inside the chroot of the host's root: set up
# what the kernel tests need, then run the suites the plan lists. The plan
# (written by `cargo xtask vm-test` for each guest) sets WORKSPACE, BACKEND,
# FILTER and SUITES ("name=executable" words).
set -u
. "$1"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Tests write under TMPDIR. A tmpfs over /tmp would hide a checkout that lives there.
case "$WORKSPACE/" in
    /tmp/*) mkdir -p /run/airlock-tmp && export TMPDIR=/run/airlock-tmp ;;
    *) mount -t tmpfs tmpfs /tmp && export TMPDIR=/tmp ;;
esac
export HOME=$TMPDIR RUST_BACKTRACE=1
# Each test's daemon must pick this backend; waits inside tests are scaled for TCG.
export AIRLOCK_EXPECT_BACKEND=$BACKEND AIRLOCK_TEST_TIME_SCALE=6
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null || { mkdir -p /run/cgroup2 && mount -t cgroup2 cgroup2 /run/cgroup2; }
mount -t tmpfs tmpfs "$WORKSPACE/target/tmp"
ip link set lo up
# Pseudo-terminals (tmux in the broker-escape tests needs them).
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts 2>/dev/null
echo "airlock-vm: kernel $(uname -r), lsm=$(cat /sys/kernel/security/lsm 2>/dev/null || echo '?')"
cd "$WORKSPACE"
rc=0
for suite in $SUITES; do
    echo "AIRLOCK-VM-SUITE=${suite%%=*}"
    if [ -n "$FILTER" ]; then
        "${suite#*=}" --test-threads=2 --color=never "$FILTER" || rc=1
    else
        "${suite#*=}" --test-threads=2 --color=never || rc=1
    fi
done
exit $rc
