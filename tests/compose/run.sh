#!/usr/bin/env bash
# Compose flow (machines with Docker + the compose plugin): bring the stack up, wait for Veto's
# decisions on the `decisions` topic, check them, tear everything down. Exit 0 only when
# decisions of the expected shape arrived and Prometheus scraped Veto.
set -euo pipefail
cd "$(dirname "$0")/../.."

WANT="${WANT_DECISIONS:-500}"
TIMEOUT="${TIMEOUT_SECONDS:-600}"
COMPOSE=(docker compose -f docker-compose.yml -p veto-compose-test)

cleanup() { "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT

bash tests/compose/validate.sh

echo "==> docker compose up --build"
"${COMPOSE[@]}" up -d --build

echo "==> waiting for $WANT decisions (timeout ${TIMEOUT}s)"
deadline=$((SECONDS + TIMEOUT))
out="$(mktemp)"
while :; do
  # JSON decisions (deploy/veto.toml sets the JSON output format), one a line
  "${COMPOSE[@]}" exec -T kafka /opt/kafka/bin/kafka-console-consumer.sh \
    --bootstrap-server kafka:19092 --topic decisions --from-beginning \
    --max-messages "$WANT" --timeout-ms 10000 >"$out" 2>/dev/null || true
  if [ "$(wc -l <"$out")" -ge "$WANT" ]; then break; fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "timed out with $(wc -l <"$out") decisions" >&2
    "${COMPOSE[@]}" logs --tail 50 veto >&2 || true
    exit 1
  fi
  sleep 5
done

echo "==> checking decisions"
python3 tests/compose/check_decisions.py --min "$WANT" <"$out"

echo "==> checking that Prometheus scrapes Veto"
for _ in $(seq 1 30); do
  if curl -fsS 'http://localhost:9090/api/v1/query?query=up%7Bjob%3D%22veto%22%7D' | grep -q '"1"\]'; then
    echo "prometheus: veto target up"
    curl -fsS 'http://localhost:3000/api/health' >/dev/null && echo "grafana: healthy"
    exit 0
  fi
  sleep 2
done
echo "prometheus never saw the veto target up" >&2
exit 1
