#!/usr/bin/env bash
# The compose flow as plain processes (no Docker): Apache Kafka (the version docker-compose.yml
# runs, started by tests/kafka/broker.sh), `veto run`, `veto-loadgen`;
# then every produced event must have exactly one decision (read with tests/compose/read_topic.py),
# some of them not `allow`, and Veto must stop cleanly on SIGTERM. Installs the confluent-kafka
# Python client into ~/.cache/veto-tools/py when missing. Builds release binaries into
# $CARGO_TARGET_DIR (default ~/.cache/veto-target).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/veto-target}"
PY="$HOME/.cache/veto-tools/py/bin/python"
EVENTS="${EVENTS:-3000}"
RATE="${RATE:-1000}"
TIMEOUT="${TIMEOUT_SECONDS:-120}"
if ! "$PY" -c "import confluent_kafka" 2>/dev/null; then
  python3 -m venv "$HOME/.cache/veto-tools/py"
  "$PY" -m pip install -q confluent-kafka
fi

echo "==> cargo build --release (veto, veto-loadgen)"
cargo build -q --release -p veto -p veto-tools --bins
BIN="$CARGO_TARGET_DIR/release"

work="$(mktemp -d)"
pids=()
kafka_dir=""
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -z "$kafka_dir" ] || bash tests/kafka/broker.sh stop "$kafka_dir"
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "work dir kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

echo "==> Apache Kafka (tests/kafka/broker.sh, the broker image docker-compose.yml runs)"
kafka_dir="$work/kafka"
BROKERS="$(bash tests/kafka/broker.sh start "$kafka_dir")"
echo "    on $BROKERS"

"$BIN/veto-loadgen" --brokers "$BROKERS" --quiet --create-only \
  --create-topics payments,decisions,dead-letters,entity-tags,decisions-shadow --partitions 4

cat >"$work/veto.toml" <<TOML
[kafka]
brokers = "$BROKERS"
group_id = "veto-processes-test"
input_format = "auto"
output_format = "json"

[rules]
paths = ["$ROOT/rules/payments.veto"]

[store]
data_dir = "$work/data"

[telemetry]
listen = "127.0.0.1:0"
log_level = "info"
TOML

echo "==> veto run"
"$BIN/veto" run --config "$work/veto.toml" >"$work/veto.log" 2>&1 &
veto_pid=$!
pids+=("$veto_pid")

# the same stream (same seed, start time and rate) to Kafka and to a file to compare against
START_MS="$(date +%s%3N)"
common=(--count "$EVENTS" --rate "$RATE" --seed 7 --users 2000 --fraud-rate 0.2 --start-ms "$START_MS" --quiet)
echo "==> veto-loadgen: $EVENTS events at $RATE/s"
"$BIN/veto-loadgen" --brokers "$BROKERS" --topic payments --format json "${common[@]}"
"$BIN/veto-loadgen" --out "$work/events.jsonl" "${common[@]}" >/dev/null

echo "==> waiting for $EVENTS decisions (timeout ${TIMEOUT}s)"
deadline=$((SECONDS + TIMEOUT))
while :; do
  "$PY" tests/compose/read_topic.py --brokers "$BROKERS" --topic decisions >"$work/decisions.jsonl" 2>/dev/null || true
  have="$(grep -c '"trigger":"event"' "$work/decisions.jsonl" || true)"
  [ "$have" -ge "$EVENTS" ] && break
  if ! kill -0 "$veto_pid" 2>/dev/null; then
    echo "veto exited early; last log lines:" >&2; tail -20 "$work/veto.log" >&2; exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "timed out with $have event decisions; last veto log lines:" >&2; tail -20 "$work/veto.log" >&2; exit 1
  fi
  sleep 1
done

echo "==> checking decisions"
python3 tests/compose/check_decisions.py --events "$work/events.jsonl" --min "$EVENTS" --require-non-allow \
  <"$work/decisions.jsonl"

echo "==> SIGTERM veto"
kill -TERM "$veto_pid"
status=0; wait "$veto_pid" || status=$?
if [ "$status" -ne 0 ]; then
  echo "veto exited with $status after SIGTERM; last log lines:" >&2; tail -20 "$work/veto.log" >&2; exit 1
fi
echo "run-processes: OK"
