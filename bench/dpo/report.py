#!/usr/bin/python3
"""The report of bench/dpo: reads what run.sh left in its work folder and
prints throughput, memory and the per-step losses of both implementations.

    report.py WORK_DIR --repeats N --batch B --threads T --blas PATH

WORK_DIR/rep-K (K = 1..N) holds, for repeat K:
  alignkit/dpo/  the stage folder of `alignkit run` (metrics.jsonl, events.out.tfevents.*)
  alignkit.time  `/usr/bin/time -v` of `alignkit run`
  python.json    reference_dpo.py's result
  python.time    `/usr/bin/time -v` of reference_dpo.py

Step time: the interval between the ends of consecutive steps, steps 2..S
(step 1 carries the first-call warm-up), pooled over the repeats; the median
is reported. AlignKit's step ends are the wall times of its TensorBoard
events (written when the step is logged, logging_steps = 1); the reference's
are time.perf_counter() at the same point. Setup (loading, reading data)
and the final save are outside every interval. tokens/s counts the real
(non-padding) tokens of the policy's forward, the mean per step over steps
2..S divided by the median step time; pairs/s is batch / median step time.
Exits with 1 when the losses disagree (step 1 by more than 1e-5, any step by
more than 1e-3), when step 1's grad_norm or logps/chosen differ by more than
1e-5 relative (policy and reference start equal, so step 1's loss is log 2 on
any forward: those two are what check the forward and backward), or when the
two sides did not see the same tokens.
"""
import argparse
import glob
import json
import os
import re
import statistics
import struct
import sys

FIRST_STEP_TOLERANCE = 1e-5
ANY_STEP_TOLERANCE = 1e-3
FIRST_STEP_RELATIVE_TOLERANCE = 1e-5


def varint(data, pos):
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def event_wall_times(stage_dir):
    """{step: wall_time} of the scalar events in the stage's TensorBoard file(s)."""
    times = {}
    for path in sorted(glob.glob(os.path.join(stage_dir, "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack_from("<Q", data, pos)
            record = data[pos + 12 : pos + 12 + length]  # after the length and its crc
            pos += 12 + length + 4
            # Event: wall_time = 1 (double), step = 2 (varint), summary = 5 (bytes).
            wall_time, step, has_summary, field_pos = None, 0, False, 0
            while field_pos < len(record):
                key, field_pos = varint(record, field_pos)
                field, wire = key >> 3, key & 7
                if wire == 1:
                    if field == 1:
                        (wall_time,) = struct.unpack_from("<d", record, field_pos)
                    field_pos += 8
                elif wire == 0:
                    value, field_pos = varint(record, field_pos)
                    if field == 2:
                        step = value
                elif wire == 2:
                    size, field_pos = varint(record, field_pos)
                    has_summary = has_summary or field == 5
                    field_pos += size
                elif wire == 5:
                    field_pos += 4
                else:
                    raise ValueError("%s: unexpected protobuf wire type %d" % (path, wire))
            if has_summary:
                times.setdefault(step, wall_time)
    return times


def alignkit_steps(stage_dir):
    """Per logged train step: the metrics.jsonl record plus its event time and the step's tokens."""
    with open(os.path.join(stage_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    by_step = {r["step"]: r for r in records if r["split"] == "train"}  # a later line for a step wins
    times = event_wall_times(stage_dir)
    steps, previous_tokens = [], 0
    for step in sorted(by_step):
        record = dict(by_step[step])
        record["time"] = times[step]
        record["tokens"] = int(record["num_tokens"]) - previous_tokens
        previous_tokens = int(record["num_tokens"])
        steps.append(record)
    return steps


def time_v(path):
    """(max RSS in MB, wall seconds) from `/usr/bin/time -v` output."""
    with open(path) as f:
        text = f.read()
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    clock = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text).group(1)
    seconds = 0.0
    for part in clock.split(":"):
        seconds = seconds * 60 + float(part)
    return rss_kb / 1024.0, seconds


def intervals(steps):
    return [b["time"] - a["time"] for a, b in zip(steps, steps[1:])]


def summarise(runs, timings, batch):
    step_times = [dt for steps in runs for dt in intervals(steps)]
    tokens = [s["tokens"] for steps in runs for s in steps[1:]]
    median_step = statistics.median(step_times)
    return {
        "step_ms": 1000.0 * median_step,
        "pairs_per_s": batch / median_step,
        "tokens_per_s": statistics.mean(tokens) / median_step,
        "rss_mb": statistics.median(t[0] for t in timings),
        "total_s": statistics.median(t[1] for t in timings),
        "step_ms_range": (1000.0 * min(step_times), 1000.0 * max(step_times)),
        "samples": len(step_times),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work")
    parser.add_argument("--repeats", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--blas", required=True)
    args = parser.parse_args()

    alignkit_runs, python_runs, alignkit_timings, python_timings = [], [], [], []
    for k in range(1, args.repeats + 1):
        rep = os.path.join(args.work, "rep-%d" % k)
        alignkit_runs.append(alignkit_steps(os.path.join(rep, "alignkit", "dpo")))
        with open(os.path.join(rep, "python.json")) as f:
            python_runs.append(json.load(f)["steps"])
        alignkit_timings.append(time_v(os.path.join(rep, "alignkit.time")))
        python_timings.append(time_v(os.path.join(rep, "python.time")))

    a = summarise(alignkit_runs, alignkit_timings, args.batch)
    p = summarise(python_runs, python_timings, args.batch)
    print("bench/dpo: batch %d pairs, %d steps, %d repeats, %d threads, BLAS %s"
          % (args.batch, len(python_runs[0]), args.repeats, args.threads, args.blas))
    print("step time: median of %d step intervals (steps 2..%d of every repeat); RSS and total: median of repeats"
          % (a["samples"], len(python_runs[0])))
    print()
    header = "%-16s %9s %10s %14s %18s %13s %9s" % ("impl", "pairs/s", "tokens/s", "step ms (med)", "step ms (min-max)",
                                                    "peak RSS MB", "total s")
    print(header)
    print("-" * len(header))
    for name, s in (("AlignKit (C++)", a), ("Python (torch)", p)):
        print("%-16s %9.2f %10.0f %14.1f %18s %13.0f %9.1f" % (name, s["pairs_per_s"], s["tokens_per_s"], s["step_ms"],
                                                            "%.0f-%.0f" % s["step_ms_range"], s["rss_mb"], s["total_s"]))
    print("%-16s %9.2fx %9.2fx %13.2fx %18s %12.2fx %8.2fx" % ("AlignKit/Python", a["pairs_per_s"] / p["pairs_per_s"],
                                                           a["tokens_per_s"] / p["tokens_per_s"], a["step_ms"] / p["step_ms"],
                                                           "", a["rss_mb"] / p["rss_mb"], a["total_s"] / p["total_s"]))
    print()

    failures = []
    print("per-step values of repeat 1 (AlignKit | Python | abs diff):")
    print("%4s  %-38s  %-38s  %-38s" % ("step", "loss", "grad_norm", "logps/chosen"))
    diffs = {"loss": [], "grad_norm": [], "logps/chosen": []}
    for ak, py in zip(alignkit_runs[0], python_runs[0]):
        cells = []
        for key in diffs:
            diff = abs(ak[key] - py[key])
            diffs[key].append(diff)
            cells.append("%12.7f %12.7f %10.2e" % (ak[key], py[key], diff))
        print("%4d  %s" % (ak["step"], "  ".join(cells)))
        if ak["tokens"] != py["tokens"]:
            failures.append("step %d: AlignKit counted %d tokens, Python %d" % (ak["step"], ak["tokens"], py["tokens"]))
    if len(alignkit_runs[0]) != len(python_runs[0]):
        failures.append("AlignKit logged %d steps, Python %d" % (len(alignkit_runs[0]), len(python_runs[0])))
    print("max abs diff over %d steps: loss %.3e (step 1: %.3e), grad_norm %.3e, logps/chosen %.3e"
          % (len(diffs["loss"]), max(diffs["loss"]), diffs["loss"][0], max(diffs["grad_norm"]), max(diffs["logps/chosen"])))
    if diffs["loss"][0] > FIRST_STEP_TOLERANCE:
        failures.append("step 1 losses differ by %.3e > %g" % (diffs["loss"][0], FIRST_STEP_TOLERANCE))
    for key in ("grad_norm", "logps/chosen"):
        relative = diffs[key][0] / abs(python_runs[0][0][key])
        if relative > FIRST_STEP_RELATIVE_TOLERANCE:
            failures.append("step 1 %s differs by %.3e relative > %g" % (key, relative, FIRST_STEP_RELATIVE_TOLERANCE))
    if max(diffs["loss"]) > ANY_STEP_TOLERANCE:
        failures.append("losses differ by up to %.3e > %g" % (max(diffs["loss"]), ANY_STEP_TOLERANCE))
    if failures:
        print("MISMATCH: " + "; ".join(failures))
        sys.exit(1)
    print("losses agree (step 1 within %g, every step within %g), step 1's grad_norm and logps/chosen within %g "
          "relative; both sides saw the same tokens" % (FIRST_STEP_TOLERANCE, ANY_STEP_TOLERANCE, FIRST_STEP_RELATIVE_TOLERANCE))


if __name__ == "__main__":
    main()
