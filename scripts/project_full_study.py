#!/usr/bin/env python3
"""Projects the full galaxy10 study's wall time from a smaller profile's measured run.

Usage: python3 scripts/project_full_study.py [--count 5000] [--pipeline pipelines/galaxy10.gpl]

Reads the last finished `galaxy10` run in .gpl/events.jsonl (per-stage seconds) and each
training stage's runs/galaxy10/<stage>/history.csv (per-epoch seconds). The model, stated so it
can be argued with:
  * a training epoch costs time proportional to the images in it; every set in the profile is
    the full one scaled by `scale` (count 21,785 / the profile's count; the profile's balance
    targets are scaled the same way), so an epoch at full size takes `scale` times as long;
  * the first epoch's excess over the steady epochs is one-off work (a frozen VGG16 base run
    once per image), also proportional to the images: times `scale`;
  * at full size a stage runs to its epoch cap in the pipeline (an upper bound: EarlyStopping
    with patience 8 may end it earlier) -- and, as a second figure, to the epochs it ran here
    scaled by cap / profile epochs;
  * stages without history (data, evaluation, report) scale with `scale`.
Only the standard library is used.
"""
import argparse
import csv
import json
import re
from pathlib import Path


def caps(pipeline: Path) -> dict:
    """`epochs N` of every train block in the pipeline (not its profiles)."""
    text = pipeline.read_text().split("\nprofile ")[0]
    out = {}
    for m in re.finditer(r"^train (\w+) \{(.*?)^\}", text, re.S | re.M):
        e = re.search(r"^\s*epochs (\d+)", m.group(2), re.M)
        if e:
            out[m.group(1)] = int(e.group(1))
    return out


def last_run(events: Path, pipeline: str, run_id=None):
    runs = {}
    for line in events.read_text().splitlines():
        e = json.loads(line)
        if e.get("pipeline") == pipeline:
            runs.setdefault(e["run"], []).append(e)
    if run_id is not None:
        return runs[run_id]
    # The quick profile has 29 stages (3 folds); medium, large and the full study have 33.
    for events_of_run in reversed(list(runs.values())):
        finished = [e for e in events_of_run if e["event"] == "stage_finished"]
        if any(e["event"] == "run_finished" for e in events_of_run) and len(finished) >= 33:
            return events_of_run
    raise SystemExit("no finished run with 33 stages in " + str(events))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=5000,
                    help="the profile's image count (medium 5000, large 7000); full is 21,785")
    ap.add_argument("--pipeline", default="pipelines/galaxy10.gpl")
    ap.add_argument("--profile-epochs", type=int, default=12,
                    help="the profile's epoch cap for stages not overridden separately")
    ap.add_argument("--override", action="append", default=["vgg_ft=8"],
                    help="stage=epochs the profile set separately")
    ap.add_argument("--run", help="run id in .gpl/events.jsonl (default: the last 33-stage run)")
    ap.add_argument("--runs-dir", default="runs/galaxy10",
                    help="where that run's history.csv files are (gpl run mirrors the latest run there)")
    args = ap.parse_args()
    args.scale = 21785 / args.count
    cap = caps(Path(args.pipeline))
    profile_cap = {k: int(v) for k, v in (o.split("=") for o in args.override)}
    run = last_run(Path(".gpl/events.jsonl"), "galaxy10", args.run)
    wall = next(e["seconds"] for e in run if e["event"] == "run_finished")
    rows, total_cap, total_ran = [], 0.0, 0.0
    for e in (e for e in run if e["event"] == "stage_finished"):
        stage, seconds = e["stage"], e["seconds"]
        model = stage.split(".")[1] if stage.startswith("cv.") else stage
        hist = Path(args.runs_dir) / stage / "history.csv"
        if hist.exists() and model in cap:
            epochs = [float(r["seconds"]) for r in csv.DictReader(hist.open())]
            steady = sorted(epochs[1:])[len(epochs[1:]) // 2] if len(epochs) > 1 else epochs[0]
            once = max(epochs[0] - steady, 0.0)
            rest = max(seconds - sum(epochs), 0.0)  # predictions, weights, plots
            ran = len(epochs)
            here_cap = profile_cap.get(model, args.profile_epochs)
            full_ran = min(cap[model], round(ran * cap[model] / here_cap))
            at_cap = args.scale * (cap[model] * steady + once + rest)
            at_ran = args.scale * (full_ran * steady + once + rest)
            rows.append((stage, seconds, f"{ran}/{here_cap}", steady, once, at_ran, at_cap))
        else:
            at_cap = at_ran = args.scale * seconds
            rows.append((stage, seconds, "", None, None, at_ran, at_cap))
        total_cap += at_cap
        total_ran += at_ran
    print(f"| stage | measured s | epochs run/cap | s per epoch | one-off s | projected full, same stopping | projected full, to the cap |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for stage, s, ep, steady, once, ran, at_cap in rows:
        f = lambda v: "" if v is None else f"{v:.1f}"
        print(f"| {stage} | {s:.1f} | {ep} | {f(steady)} | {f(once)} | {ran/60:.0f} min | {at_cap/60:.0f} min |")
    print(f"\nmeasured wall: {wall/60:.1f} min; scale {args.scale:.3f}")
    print(f"projected full study: {total_ran/3600:.1f} h if stages stop as here, {total_cap/3600:.1f} h to every epoch cap")


if __name__ == "__main__":
    main()
