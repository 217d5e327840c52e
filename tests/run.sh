#!/usr/bin/env bash
# The test command (README): installs what the tests need, then runs every test of the workspace.
# - Debian packages, only when missing: clang + libclang-dev (RocksDB bindings), libssl-dev +
#   pkg-config (librdkafka's TLS/SASL), a Java runtime and Maven (Apache Kafka), python3-venv.
# - Apache Kafka 4.4.0 for the end-to-end, crash and outage tests, fetched with Maven into
#   ~/.cache/veto-kafka once (tests/kafka/broker.sh; each test starts its own broker).
# - The confluent-kafka Python client (the crash tests' independent read_committed reader) in a
#   virtualenv under ~/.cache/veto-tools/py once.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/veto-target}"
TOOLS="${VETO_TOOLS_DIR:-$HOME/.cache/veto-tools}"

need=()
command -v clang >/dev/null 2>&1 && ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 \
  || need+=(clang libclang-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
command -v java >/dev/null 2>&1 || need+=(default-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
  echo "==> installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

echo "==> Apache Kafka (tests/kafka/broker.sh fetch)"
bash tests/kafka/broker.sh fetch

PY="$TOOLS/py/bin/python"
if ! "$PY" -c "import confluent_kafka" 2>/dev/null; then
  echo "==> installing the confluent-kafka Python client into $TOOLS/py"
  python3 -m venv "$TOOLS/py"
  "$PY" -m pip install -q confluent-kafka
fi
export VETO_PYTHON="$PY"

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
