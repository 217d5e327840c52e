#!/usr/bin/env bash
# One command per benchmark scenario: `bash tools/bench.sh core|e2e|timers|swap|spill [veto-bench args]`.
# Builds veto + veto-bench (release; VETO_BENCH_PROFILE=dev for a quick unoptimised run), fetches
# Apache Kafka once for e2e (tests/kafka/broker.sh; the harness starts the broker), then runs the
# scenario with --out bench-out/<scenario> unless --out is given. Prints where report.json and the
# plots are; a run into the default folder copies its headline plots into docs/img/
# (VETO_BENCH_DOCS_IMG=0: not).
#   core    engine events/s, scaling, ZEN ratio e2e     Kafka end to end vs passthrough;
#   timers  timer lateness vs tokio interval            --garbage 0.10 [--garbage-only]: clean vs
#           (--ticks 1000000 for 10^6-tick drift)       10 % garbage stream, dead letters checked
#   swap    latency around SIGUSR1 hot swaps    spill   throughput and RSS past store.memory_budget
# `veto-bench <scenario> --help` lists each scenario's options.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ]; then
  echo "usage: bash tools/bench.sh <core|e2e|timers|swap|spill> [veto-bench args]" >&2
  exit 2
fi
scenario="$1"; shift

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/veto-target}"
PROFILE="${VETO_BENCH_PROFILE:-release}"
if [ "$scenario" = e2e ]; then
  case " $* " in
    *" --brokers"*) ;;
    *) bash tests/kafka/broker.sh fetch >/dev/null ;;
  esac
fi

# core compares with GoRules' zen-engine: feature `zen` of veto-tools (a heavier build).
features=()
[ "$scenario" = core ] && features=(--features veto-tools/zen)
echo "==> cargo build --profile $PROFILE (veto, veto-bench) ${features[*]}"
cargo build --profile "$PROFILE" -p veto -p veto-tools --bins "${features[@]}"
case "$PROFILE" in dev) dir=debug ;; *) dir="$PROFILE" ;; esac

args=("$@")
out="bench-out/$scenario"
case " $* " in *" --out"*) out="" ;; *) args+=(--out "$out") ;; esac
"$CARGO_TARGET_DIR/$dir/veto-bench" "$scenario" "${args[@]}"

# The headline plots of a default-folder run replace the ones docs/benchmarks.md shows.
if [ -n "$out" ] && [ "${VETO_BENCH_DOCS_IMG:-1}" != 0 ]; then
  case "$scenario" in
    e2e)    plots="throughput_vs_offered_load.png:e2e-throughput-vs-offered-load.png latency_over_time.png:e2e-latency-over-time.png" ;;
    timers) plots="lateness_cdf.png:timers-lateness-cdf.png" ;;
    swap)   plots="latency_over_time.png:swap-latency-over-time.png" ;;
    spill)  plots="rss_vs_entities.png:spill-rss-vs-entities.png" ;;
    *)      plots="" ;;
  esac
  for pair in $plots; do
    if [ -f "$out/${pair%%:*}" ]; then
      cp "$out/${pair%%:*}" "docs/img/${pair#*:}"
      echo "==> docs/img/${pair#*:} updated"
    fi
  done
fi
