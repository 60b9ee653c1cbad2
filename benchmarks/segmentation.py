"""Lesion segmentation figures: the bundled (or a given) segmenter on HAM10000 `test` and on PH2, checked against
the bundled segmenter's record.

    python benchmarks/segmentation.py [--sets ph2 ham10000_test] [--model DIR] [--data-root ../shared/data]
                                      [--no-tta] [--out runs/segmentation] [--record [--overwrite]]

Prints mean Jaccard and the ISIC 2018 thresholded Jaccard (a case scores 0 below 0.65) with 95% bootstrap CIs over
images, the share of failed cases, and the speed; writes everything (with per-image Jaccard) to
<out>/segmentation_figures.json, then docs/segmentation.md's table rows rendered from the result. Targets of issue
9: thresholded Jaccard >= 0.78 on HAM10000 test, >= 0.80 on PH2. Jaccard is computed at each photo's own size
(PH2: 765x574), against its binary mask.

For the bundled segmenter (no --model) the figures are compared with its record (weights/segmenter/figures.json):
each must lie inside its recorded 95% interval and meet its target, else the departures are printed and the exit
status is 1. ``--record`` writes the measured sets into the record (``--overwrite`` to replace recorded sets).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from dermlens.segment.evaluation import evaluate_dataset
from dermlens.runtime import cpu_name
from dermlens.segment.figures import (
    FIGURES_FILE,
    TARGETS,
    check_figures,
    documented_figures,
    figures_table,
    headline_figures,
)

SETS = {"ham10000_test": ("ham10000", "test"), "ph2": ("ph2", None)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", choices=sorted(SETS), default=list(SETS))
    parser.add_argument("--model", type=Path, default=None, help="segmenter folder (default: bundled)")
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--no-tta", action="store_true", help="no flip averaging")
    parser.add_argument("--out", type=Path, default=Path("runs/segmentation"))
    parser.add_argument("--record", action="store_true", help="write the measured sets as the bundled record")
    parser.add_argument("--overwrite", action="store_true", help="with --record: replace recorded sets")
    args = parser.parse_args()
    if args.record and args.model is not None:
        parser.error("--record is for the bundled segmenter: leave out --model")
    record = json.loads(FIGURES_FILE.read_text()) if FIGURES_FILE.is_file() else {"sets": {}}
    if args.record and not args.overwrite and set(args.sets) & set(record["sets"]):
        print(f"--record: {FIGURES_FILE} already records {sorted(set(args.sets) & set(record['sets']))}; add "
              "--overwrite to replace them", file=sys.stderr)
        return 2

    figures, measured = {}, {}
    for name in args.sets:
        folder, split = SETS[name]
        path = args.data_root / folder
        if not (path / "labels.csv").is_file():
            print(f"{name}: {path} not found, skipped", file=sys.stderr)
            continue
        started = time.time()
        m = evaluate_dataset(path, args.model, split=split, tta=not args.no_tta)
        seconds = time.time() - started
        figures[name] = {**m, "seconds": seconds}
        measured[name] = headline_figures(m)
        tj, (tj_lo, tj_hi) = m["thresholded_jaccard"], m["thresholded_jaccard_ci95"]
        mj, (mj_lo, mj_hi) = m["mean_jaccard"], m["mean_jaccard_ci95"]
        verdict = "met" if tj >= TARGETS[name] else "NOT met"
        print(f"{name:14s} n={m['n']:5d}  mean Jaccard {mj:.3f} [{mj_lo:.3f}, {mj_hi:.3f}]  "
              f"thresholded Jaccard {tj:.3f} [{tj_lo:.3f}, {tj_hi:.3f}]  below 0.65: {m['share_below_0.65']:.1%}  "
              f"target {TARGETS[name]:.2f} {verdict}  ({m['n'] / seconds:.1f} img/s, "
              f"TTA {'off' if args.no_tta else 'flips'}, threads: {torch.get_num_threads()}, {cpu_name()})")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "segmentation_figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    if not figures:
        return 1
    print("\n" + figures_table(measured))
    if args.record:
        record["sets"].update(measured)
        record.update(command=" ".join(["python", "benchmarks/segmentation.py", *sys.argv[1:]]), cpu=cpu_name())
        FIGURES_FILE.write_text(json.dumps(record, indent=1) + "\n")
        print(f"recorded: {FIGURES_FILE}")
    if args.model is not None:
        return 0  # another segmenter: nothing to compare with
    problems = check_figures(measured, documented_figures())
    if problems:
        print(f"\nFAILED: the bundled segmenter departs from {FIGURES_FILE} ({len(problems)}):", file=sys.stderr)
        for line in problems:
            print(f"  - {line}", file=sys.stderr)
        return 1
    print(f"\nOK: {', '.join(measured)} inside the recorded 95% intervals ({FIGURES_FILE}) and on target.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
