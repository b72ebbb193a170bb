#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: installs the test bed when
# missing (as root), then checks formatting and lints and runs every test
# against the real registry started by the tests themselves.
#
#   scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-testbed.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked --all-targets
