#!/usr/bin/env python3
"""Checks JSON decisions (one a line on stdin) published by Veto: shape, uniqueness, coverage.

--events FILE: a JSONL file of the events produced (veto-loadgen --out); every event must have
exactly one event-triggered decision. --min N: at least N decisions must be present.
Prints a summary; exits 1 with the reason on the first failed check.
"""
import argparse
import collections
import json
import sys

OUTCOMES = {"allow", "review", "challenge", "block"}


def fail(msg):
    print(f"check_decisions: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events")
    ap.add_argument("--min", type=int, default=1)
    ap.add_argument("--require-non-allow", action="store_true")
    args = ap.parse_args()

    by_event = collections.Counter()
    outcomes = collections.Counter()
    rules = collections.Counter()
    timeouts = 0
    for n, line in enumerate(sys.stdin, 1):
        line = line.strip()
        if not line:
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            fail(f"line {n} is not JSON ({e}): {line[:120]}")
        for key in ("event_id", "outcome", "ruleset_version"):
            if key not in d:
                fail(f"line {n} has no {key!r}: {line[:200]}")
        outcome = str(d["outcome"]).lower()
        if outcome not in OUTCOMES:
            fail(f"line {n}: unknown outcome {d['outcome']!r}")
        for hit in d.get("hits", []):
            rules[hit.get("rule", "?")] += 1
        if str(d.get("trigger", "event")).lower() == "timeout":
            timeouts += 1
            continue
        if d.get("shadow"):
            continue
        by_event[d["event_id"]] += 1
        outcomes[outcome] += 1

    total = sum(by_event.values())
    print(f"decisions: {total} for {len(by_event)} events, timeouts: {timeouts}")
    print("outcomes: " + ", ".join(f"{k}={v}" for k, v in sorted(outcomes.items())))
    print("top rules: " + ", ".join(f"{k}={v}" for k, v in rules.most_common(5)))
    if total < args.min:
        fail(f"only {total} event decisions, wanted at least {args.min}")
    if args.require_non_allow and set(outcomes) <= {"allow"}:
        fail("every decision is allow: the rules caught none of the planted fraud")
    if args.events:
        with open(args.events) as f:
            produced = [json.loads(l)["event_id"] for l in f if l.strip()]
        missing = [e for e in produced if by_event[e] == 0]
        if missing:
            fail(f"{len(missing)} of {len(produced)} events have no decision, e.g. {missing[:3]}")
        extra = set(by_event) - set(produced)
        if extra:
            fail(f"{len(extra)} decisions for events never produced, e.g. {sorted(extra)[:3]}")
        doubled = [e for e, c in by_event.items() if c > 1]
        # at-least-once delivery allows duplicates only across restarts; this flow has none
        if doubled:
            fail(f"{len(doubled)} events decided more than once, e.g. {doubled[:3]}")
        print(f"every one of the {len(produced)} produced events has exactly one decision")


if __name__ == "__main__":
    main()
