#!/usr/bin/env bash
# The test command (README): installs what the tests need, then runs every test of the workspace.
# - Debian packages: clang + libclang-dev (RocksDB bindings), only when missing.
# - tansu, a real Kafka-protocol broker for the end-to-end tests, built once into ~/.cache/veto-tools.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/veto-target}"
TOOLS="${VETO_TOOLS_DIR:-$HOME/.cache/veto-tools}"
TANSU_VERSION=0.6.0

if ! command -v clang >/dev/null 2>&1 || ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 \
  || ! command -v pkg-config >/dev/null 2>&1 || [ ! -f /usr/include/openssl/ssl.h ]; then
  echo "==> installing clang, libclang-dev (RocksDB bindings), libssl-dev and pkg-config (librdkafka TLS/SASL)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang libclang-dev libssl-dev pkg-config
fi

if [ ! -x "$TOOLS/bin/tansu" ] || ! "$TOOLS/bin/tansu" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  echo "==> building the tansu broker $TANSU_VERSION into $TOOLS (once; ~15 min)"
  cargo install tansu --version "$TANSU_VERSION" --no-default-features --features dynostore \
    --locked --root "$TOOLS" --target-dir "$HOME/.cache/tansu-target"
fi
export VETO_TANSU="$TOOLS/bin/tansu"

echo "==> cargo test --workspace"
log="$(mktemp)"
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')
rm -f "$log"
echo "$passed passed, $failed failed"
exit "$status"
