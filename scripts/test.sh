#!/usr/bin/env bash
# Sets up what is missing, then runs every test: unit, ABI layout, policy and
# kernel tests (as root, against the real kernel), and checks the kernel is left clean.
set -euo pipefail
cd "$(dirname "$0")/.."
. ./scripts/setup.sh
echo "test: kernel $(uname -r); running cargo xtask test"
cargo xtask test "$@"
