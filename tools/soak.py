#!/usr/bin/env python3
"""Soak: runs a broker, `veto run` and `veto-loadgen` at a fixed rate, samples Veto every 10 s.

Records Veto's RSS, consumer lag, decisions/s, entities, store bytes, armed timers and
eval-latency p99 (from /metrics) into
<out>/soak.csv and prints a verdict: RSS after warm-up must stay within ±10 % of its mean and the
lag must stay bounded (below 10 s worth of events). Usage (release binaries):

    python3 tools/soak.py --duration 600 --rate 20000 --out bench-out/soak

`--broker kafka` (default) starts Apache Kafka with tests/kafka/broker.sh (fetched with Maven
once) in the work folder and stops it at the end; `--broker mock` uses `veto-mock-broker`
(librdkafka's mock cluster, in-memory, keeps the newest few MB per partition).

`--rate` defaults to 70 % of `--max-rate` (the e2e saturation you measured). Stdlib only.
"""
import argparse
import csv
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BROKER_SH = ROOT / "tests/kafka/broker.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def metrics(port: int) -> dict:
    """Parses the Prometheus text of /metrics into {name{labels}: value}."""
    out = {}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if not line or line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            try:
                out[key] = float(value)
            except ValueError:
                pass
    return out


def buckets(m: dict, name: str) -> list:
    """Cumulative (le, count) pairs of a histogram, sorted by le."""
    pairs = []
    for key, value in m.items():
        if key.startswith(name + "_bucket{") and 'le="' in key:
            le = key.split('le="', 1)[1].split('"', 1)[0]
            pairs.append((float("inf") if le == "+Inf" else float(le), value))
    return sorted(pairs)


def p99_between(before: list, after: list) -> float:
    """p99 (seconds) of the observations recorded between two snapshots of a histogram."""
    if not before or len(before) != len(after):
        return float("nan")
    diffs = [(le, a - b) for (le, a), (_, b) in zip(after, before)]
    total = diffs[-1][1]
    if total <= 0:
        return float("nan")
    for le, count in diffs:
        if count >= 0.99 * total:
            return le
    return float("inf")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=600, help="seconds of load (default 600)")
    parser.add_argument("--max-rate", type=float, default=90_000, help="measured saturation, events/s")
    parser.add_argument("--rate", type=float, help="events/s (default 70%% of --max-rate)")
    parser.add_argument("--warmup", type=int, default=180, help="seconds excluded from the RSS check")
    parser.add_argument("--time-scale", type=float, default=600.0,
                        help="event-time seconds per wall second (default 600: the rule set's 24 h "
                             "windows and 1 h features reach steady state within the warm-up)")
    parser.add_argument("--users", type=int, default=20_000,
                        help="key cardinality; small enough that the entity set is complete after warm-up")
    parser.add_argument("--out", default="bench-out/soak")
    parser.add_argument("--bin", help="folder with release veto, veto-loadgen and veto-mock-broker "
                        "(default: built here with cargo into $CARGO_TARGET_DIR, else ~/.cache/veto-target)")
    parser.add_argument("--broker", choices=["kafka", "mock"], default="kafka")
    args = parser.parse_args()
    if args.bin is None:
        target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/veto-target"))
        subprocess.run(["cargo", "build", "--release", "-p", "veto", "-p", "veto-tools", "--bins"],
                       check=True, env={**os.environ, "CARGO_TARGET_DIR": target})
        args.bin = os.path.join(target, "release")
    rate = args.rate or 0.7 * args.max_rate
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="veto-soak-"))
    procs = []
    stop_kafka = []

    def stop_all():
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
        for kafka_dir in stop_kafka:
            subprocess.run(["bash", str(BROKER_SH), "stop", str(kafka_dir)], check=False)

    try:
        mport = free_port()
        if args.broker == "mock":
            mock = subprocess.Popen([f"{args.bin}/veto-mock-broker", "--partitions", "4"],
                                    stdout=subprocess.PIPE, stderr=open(work / "broker.log", "w"), text=True)
            procs.append(mock)
            brokers = mock.stdout.readline().strip()
            if not brokers:
                raise SystemExit(f"veto-mock-broker printed no address; see {work / 'broker.log'}")
        else:
            kafka_dir = work / "kafka"
            brokers = subprocess.run(["bash", str(BROKER_SH), "start", str(kafka_dir)], check=True,
                                     stdout=subprocess.PIPE, text=True).stdout.strip()
            stop_kafka.append(kafka_dir)
            subprocess.run([f"{args.bin}/veto-loadgen", "--brokers", brokers, "--quiet", "--create-only",
                            "--create-topics", "payments,decisions,dead-letters,entity-tags,decisions-shadow",
                            "--partitions", "4"], check=True)
        (work / "veto.toml").write_text(
            f'[kafka]\nbrokers = "{brokers}"\ngroup_id = "veto-soak"\n\n'
            f'[rules]\npaths = ["{ROOT / "rules/payments.veto"}"]\n\n'
            f'[store]\ndata_dir = "{work / "state"}"\n\n'
            # event time runs --time-scale times faster than the clock
            f'[pipeline]\nmax_future_skew = "0s"\n\n'
            f'[telemetry]\nlisten = "127.0.0.1:{mport}"\nlog_level = "warn"\n')
        veto = subprocess.Popen([f"{args.bin}/veto", "run", "--config", str(work / "veto.toml")],
                                stdout=subprocess.DEVNULL, stderr=open(out / "veto.log", "w"))
        procs.append(veto)
        wait_port(mport)
        procs.append(subprocess.Popen(
            [f"{args.bin}/veto-loadgen", "--brokers", brokers, "--topic", "payments", "--rate", str(rate),
             "--duration", f"{args.duration}s", "--count", str(int(rate * args.duration) + 1), "--seed", "11", "--users", str(args.users),
             "--time-scale", str(args.time_scale), "--quiet"],
            stdout=subprocess.DEVNULL, stderr=open(work / "loadgen.log", "w")))
        print(f"soak: {rate:.0f} events/s for {args.duration} s on {args.broker} ({brokers}); sampling every 10 s into {out / 'soak.csv'}")
        rows = []
        started = time.monotonic()
        prev = metrics(mport)
        while time.monotonic() - started < args.duration:
            time.sleep(10)
            if veto.poll() is not None:
                print(f"veto exited with {veto.returncode}; see {out / 'veto.log'}", file=sys.stderr)
                return 1
            now = metrics(mport)
            decided = now.get('veto_events_total{result="decided"}', 0.0)
            lag = sum(v for k, v in now.items() if k.startswith("veto_consumer_lag{") and v > 0)
            row = {
                "t_s": round(time.monotonic() - started),
                "rss_mb": round(rss_bytes(veto.pid) / 2**20, 1),
                "lag": int(lag),
                "decided_per_s": round((decided - prev.get('veto_events_total{result="decided"}', 0.0)) / 10),
                "entities": int(now.get("veto_store_entities", 0)),
                "store_mb": round(now.get("veto_store_bytes", 0) / 2**20, 1),
                "timers": int(now.get("veto_timers_armed", 0)),
                "eval_p99_us": round(1e6 * p99_between(buckets(prev, "veto_eval_duration_seconds"),
                                                       buckets(now, "veto_eval_duration_seconds")), 1),
            }
            rows.append(row)
            print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
            prev = now
        with open(out / "soak.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        steady = [r["rss_mb"] for r in rows if r["t_s"] > args.warmup]
        mean = sum(steady) / max(len(steady), 1)
        spread = max(abs(r - mean) / mean for r in steady) if steady else float("nan")
        max_lag = max(r["lag"] for r in rows)
        ok = spread <= 0.10 and max_lag <= 10 * rate
        print(f"RSS after {args.warmup} s warm-up: mean {mean:.1f} MB, min {min(steady):.1f}, "
              f"max {max(steady):.1f} (±{100 * spread:.1f} %); max lag {max_lag} events "
              f"({max_lag / rate:.2f} s of load) -> {'OK' if ok else 'FAIL'}")
        return 0 if ok else 1
    finally:
        stop_all()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(main())
