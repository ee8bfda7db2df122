"""Reads the lines of bench/cuda_bench and bench/torch_cuda.py (any number of interleaved rounds) and prints one
markdown table of medians over rounds with spdlab/PyTorch ratios, then the optimizer steps.

Run: python3 bench/cuda_table.py LOG [--title TEXT]     (LOG may mix other lines; only 'spdlab '/'torch ' count)
Speed ratio = spdlab img/s / PyTorch img/s (above 1: spdlab is faster). Goals (issue 11): at least 1.0x for
training and inference in fp32 and TF32; spdlab's SPD step at most 1.2x its AdamW step.
"""
import argparse
import shlex
import statistics
import sys


def parse(lines):
    runs = {}  # (runner, config, what, precision) -> [fields of each line]
    for line in lines:
        if not line.startswith(("spdlab ", "torch ")):
            continue
        tokens = shlex.split(line)  # device="NVIDIA H200" stays one token
        if len(tokens) < 5:
            continue
        runner, config = tokens[0], tokens[1]
        if tokens[2] == "step":  # spdlab <config> step <kind> fp32 params=.. median_ms=..
            what, precision, kv = "step " + tokens[3], tokens[4], tokens[5:]
        else:  # spdlab <config> train fp32 batch=.. median_ms=..
            what, precision, kv = tokens[2], tokens[3], tokens[4:]
        runs.setdefault((runner, config, what, precision), []).append(dict(t.split("=", 1) for t in kv if "=" in t))
    return runs


def med(rows, key):
    return statistics.median(float(r[key]) for r in rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log")
    ap.add_argument("--title", default="")
    args = ap.parse_args()
    runs = parse(open(args.log).read().splitlines())
    if not runs:
        print(f"cuda_table: no spdlab or torch result lines in {args.log}", file=sys.stderr)
        return 1
    if args.title:
        print(f"### {args.title}\n")
    for runner in ("spdlab", "torch"):
        first = next((rows[0] for (r, _, _, _), rows in runs.items() if r == runner), None)
        if first:
            extra = f", PyTorch {first.get('version', '?')}, model {first.get('impl', '?')}" if runner == "torch" else ""
            print(f"- {runner} on {first.get('device', '?')}{extra}")
    rounds = max(len(rows) for rows in runs.values())
    print(f"- medians over {rounds} interleaved round(s); each process reports the median of its timed iterations\n")

    print("| config | step | precision | batch | spdlab ms | torch ms | spdlab img/s | torch img/s | speed ratio "
          "| spdlab peak MB | torch peak MB |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    keys = sorted({(c, w, p) for (_, c, w, p) in runs if not w.startswith("step")},
                  key=lambda k: (k[0], k[1] != "train", k[2]))
    for config, what, precision in keys:
        sp, th = runs.get(("spdlab", config, what, precision)), runs.get(("torch", config, what, precision))
        any_rows = sp or th
        cells = [config, what, precision, any_rows[0].get("batch", "?")]
        cells += [f"{med(sp, 'median_ms'):.2f}" if sp else "failed", f"{med(th, 'median_ms'):.2f}" if th else "-"]
        cells += [f"{med(sp, 'img_per_s'):.1f}" if sp else "-", f"{med(th, 'img_per_s'):.1f}" if th else "-"]
        cells.append(f"{med(sp, 'img_per_s') / med(th, 'img_per_s'):.2f}x" if sp and th else "-")
        cells += [f"{med(sp, 'peak_mb'):.0f}" if sp else "-", f"{med(th, 'peak_mb'):.0f}" if th else "-"]
        print("| " + " | ".join(cells) + " |")

    steps = {(r, c, w): rows for (r, c, w, _), rows in runs.items() if w.startswith("step")}
    if steps:
        print("\n| config | optimizer step | params | median ms | x spdlab AdamW |")
        print("|---|---|---:|---:|---:|")
        for (runner, config, what), rows in sorted(steps.items()):
            base = steps.get(("spdlab", config, "step adamw"))
            ratio = f"{med(rows, 'median_ms') / med(base, 'median_ms'):.2f}" if base else "-"
            print(f"| {config} | {runner} {what[5:]} | {rows[0].get('params', '?')} | {med(rows, 'median_ms'):.3f} "
                  f"| {ratio} |")
    print("\nSpeed ratio = spdlab img/s / PyTorch img/s. Goals: at least 1.0x for train and infer in fp32 and TF32; "
          "spdlab SPD at most 1.2x spdlab AdamW.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
