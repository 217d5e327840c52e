#!/usr/bin/env bash
# A single-node Apache Kafka (KRaft: broker and controller in one process) on 127.0.0.1, for the
# tests, the benchmarks, the soak and the compose process test. Documented in docs/kafka.md.
#
#   broker.sh fetch            fetch Kafka with Maven into the cache once; print the jar folder
#   broker.sh start DIR        start the broker whose state lives in DIR (formats DIR the first
#                              time, on free ports; a restart reuses DIR's ports and log), wait
#                              until it serves requests, print its bootstrap address
#   broker.sh stop DIR         stop it (SIGTERM, SIGKILL after 20 s)
#   broker.sh kill DIR         kill -9 it (DIR stays: `start DIR` brings the same broker back)
#   broker.sh address DIR      print the bootstrap address of DIR's broker
#
# Environment: VETO_KAFKA_CACHE (default ~/.cache/veto-kafka), VETO_KAFKA_HEAP (default 768m),
# VETO_KAFKA_GC (G1, the default, or ZGC), VETO_KAFKA_START_TIMEOUT seconds (default 120),
# JAVA (default java).
set -euo pipefail

KAFKA_VERSION=4.4.0
HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE="${VETO_KAFKA_CACHE:-$HOME/.cache/veto-kafka}"
LIBS="$CACHE/$KAFKA_VERSION/libs"
JAVA="${JAVA:-java}"

die() { echo "broker.sh: $*" >&2; exit 1; }

fetch() {
  if [ ! -f "$LIBS/kafka_2.13-$KAFKA_VERSION.jar" ] || [ ! -f "$LIBS/.complete" ]; then
    command -v mvn >/dev/null || die "mvn not found: Maven is needed to fetch Kafka $KAFKA_VERSION"
    echo "broker.sh: fetching Apache Kafka $KAFKA_VERSION with Maven into $LIBS" >&2
    rm -rf "$LIBS"
    mvn -q -B -f "$HERE/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$LIBS" -DincludeScope=runtime -Dkafka.version="$KAFKA_VERSION" >&2 \
      || die "Maven could not fetch Kafka $KAFKA_VERSION (see above)"
    touch "$LIBS/.complete"
  fi
  echo "$LIBS"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A bounded heap; G1 with short pauses (latency figures are taken against this broker), or ZGC,
# whose pauses stay under a millisecond (docs/benchmarks.md, "Broker GC").
case "${VETO_KAFKA_GC:-G1}" in
  G1) GC_OPTS=(-XX:+UseG1GC -XX:MaxGCPauseMillis=20) ;;
  ZGC) GC_OPTS=(-XX:+UseZGC) ;;
  *) die "VETO_KAFKA_GC must be G1 or ZGC, not ${VETO_KAFKA_GC}" ;;
esac
JVM_OPTS=(-Xms"${VETO_KAFKA_HEAP:-768m}" -Xmx"${VETO_KAFKA_HEAP:-768m}" "${GC_OPTS[@]}"
  -Djava.awt.headless=true -Dorg.slf4j.simpleLogger.defaultLogLevel=info
  -Dorg.slf4j.simpleLogger.showDateTime=true -cp "$LIBS/*")
jvm() { "$JAVA" "${JVM_OPTS[@]}" "$@"; }

configure() {
  local dir="$1" port controller
  port="$(free_port)"
  controller="$(free_port)"
  [ "$port" != "$controller" ] || controller="$(free_port)"
  mkdir -p "$dir/data"
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
controller.quorum.voters=1@127.0.0.1:$controller
log.dirs=$dir/data
num.partitions=1
# One broker: every internal topic has one replica; few partitions start fast.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests start consumers at once; failover tests use sub-second session timeouts.
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=500
group.classic.min.session.timeout.ms=500
EOF
  echo "$port" >"$dir/port"
  jvm kafka.tools.StorageTool format -t "$(jvm kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)" \
    -c "$dir/server.properties" >>"$dir/format.log" 2>&1 \
    || { cat "$dir/format.log" >&2; die "formatting $dir failed"; }
}

running_pid() {
  local dir="$1" pid
  [ -f "$dir/pid" ] || return 1
  pid="$(cat "$dir/pid")"
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

start() {
  local dir="$1" from pid deadline
  [ -n "$dir" ] || die "usage: broker.sh start DIR"
  fetch >/dev/null
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  if running_pid "$dir" >/dev/null; then address "$dir"; return; fi
  [ -f "$dir/server.properties" ] || configure "$dir"
  touch "$dir/broker.log"
  from=$(($(wc -c <"$dir/broker.log") + 1))
  # Its own session, so a signal to the test's process group does not reach it: only `stop`
  # and `kill` end it (setsid execs in place here, so $! is the JVM's pid).
  setsid "$JAVA" "${JVM_OPTS[@]}" -Xlog:gc:file="$dir/gc.log":time,uptime kafka.Kafka "$dir/server.properties" \
    >>"$dir/broker.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$dir/pid"
  deadline=$((SECONDS + ${VETO_KAFKA_START_TIMEOUT:-120}))
  until tail -c +"$from" "$dir/broker.log" | grep -q "Kafka Server started"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 40 "$dir/broker.log" >&2
      die "the broker in $dir exited while starting (log above: $dir/broker.log)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      kill -9 "$pid" 2>/dev/null || true
      tail -n 40 "$dir/broker.log" >&2
      die "the broker in $dir did not start within ${VETO_KAFKA_START_TIMEOUT:-120} s"
    fi
    sleep 0.2
  done
  address "$dir"
}

stop() {
  local dir="$1" pid
  pid="$(running_pid "$dir")" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 200); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$dir/pid"; return 0; }
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/pid"
}

kill9() {
  local dir="$1" pid
  pid="$(running_pid "$dir")" || die "no broker runs in $dir"
  kill -9 "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  rm -f "$dir/pid"
}

address() {
  [ -f "$1/port" ] || die "$1 holds no broker (start it first)"
  echo "127.0.0.1:$(cat "$1/port")"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start "${2:-}" ;;
  stop) stop "${2:?usage: broker.sh stop DIR}" ;;
  kill) kill9 "${2:?usage: broker.sh kill DIR}" ;;
  address) address "${2:?usage: broker.sh address DIR}" ;;
  *) die "usage: broker.sh fetch | start DIR | stop DIR | kill DIR | address DIR" ;;
esac
