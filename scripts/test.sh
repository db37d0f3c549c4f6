#!/usr/bin/env bash
# Sets up what is missing, then runs every test:
#  1. cargo xtask test: unit, ABI layout, policy and kernel tests (as root, on
#     this kernel), then a check that the kernel is left clean;
#  2. cargo xtask vm-test: the kernel tests again inside Debian's 6.1 and 6.12
#     kernels under qemu, with the LSM backend and with the compat backend.
set -euo pipefail
cd "$(dirname "$0")/.."
. ./scripts/setup.sh
echo "test: kernel $(uname -r); running cargo xtask test"
cargo xtask test
echo "test: running cargo xtask vm-test (Debian 6.1 and 6.12, LSM and compat backends)"
cargo xtask vm-test
