#!/usr/bin/python3
"""Table of bench/memory/run.sh: peak RSS and median step time per configuration.

    report.py WORK --threads N --blas PATH --batch B --length T --params TEXT NAME...

Each NAME is a folder of WORK holding `time.txt` (`/usr/bin/time -v` of the
run) and `out/dpo` (the stage folder). Step time: the median interval between
the TensorBoard wall times of consecutive train steps (steps 2..S; the first
step also pays for allocation), read as bench/dpo/report.py reads them.
Ratios are to the first configuration.
"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dpo"))
from report import event_wall_times, time_v  # noqa: E402  (bench/dpo/report.py)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work")
    parser.add_argument("names", nargs="+")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--blas", required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--length", type=int, required=True)
    parser.add_argument("--params", required=True)
    args = parser.parse_args()

    rows = []
    for name in args.names:
        folder = os.path.join(args.work, name)
        rss_mb, wall = time_v(os.path.join(folder, "time.txt"))
        times = event_wall_times(os.path.join(folder, "out", "dpo"))
        ordered = [times[step] for step in sorted(times)]
        intervals = [b - a for a, b in zip(ordered, ordered[1:])]
        step_s = statistics.median(intervals) if intervals else float("nan")
        rows.append((name, rss_mb, step_s, wall))

    base_rss, base_step = rows[0][1], rows[0][2]
    print(f"DPO step, model of {args.params}, {args.batch} pairs x {args.length} tokens a row, "
          f"{args.threads} threads, BLAS {args.blas}")
    print()
    print("| configuration | peak RSS (MB) | RSS ratio | step time (s) | step ratio | process wall (s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, rss, step, wall in rows:
        print(f"| {name} | {rss:.0f} | {rss / base_rss:.2f} | {step:.2f} | {step / base_step:.2f} | {wall:.1f} |")


if __name__ == "__main__":
    main()
