"""Lesion segmentation figures: the bundled (or a given) segmenter on HAM10000 `test` and on PH2.

    python benchmarks/segmentation.py [--model DIR] [--data-root ../shared/data] [--no-tta] [--out runs/segmentation]

Prints mean Jaccard and the ISIC 2018 thresholded Jaccard (a case scores 0 below 0.65) with 95% bootstrap CIs over
images, the share of failed cases, and the speed; writes everything (with per-image Jaccard) to
<out>/segmentation_figures.json. Targets of issue 9: thresholded Jaccard >= 0.78 on HAM10000 test, >= 0.80 on PH2.
Jaccard is computed at each photo's own size (PH2: 765x574), against its binary mask.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from dermlens.segment.evaluation import evaluate_dataset

TARGETS = {"ham10000_test": 0.78, "ph2": 0.80}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="segmenter folder (default: bundled)")
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--no-tta", action="store_true", help="no flip averaging")
    parser.add_argument("--out", type=Path, default=Path("runs/segmentation"))
    args = parser.parse_args()

    sets = {"ham10000_test": (args.data_root / "ham10000", "test"), "ph2": (args.data_root / "ph2", None)}
    figures = {}
    for name, (path, split) in sets.items():
        if not (path / "labels.csv").is_file():
            print(f"{name}: {path} not found, skipped", file=sys.stderr)
            continue
        started = time.time()
        m = evaluate_dataset(path, args.model, split=split, tta=not args.no_tta)
        seconds = time.time() - started
        figures[name] = {**m, "seconds": seconds}
        tj, (tj_lo, tj_hi) = m["thresholded_jaccard"], m["thresholded_jaccard_ci95"]
        mj, (mj_lo, mj_hi) = m["mean_jaccard"], m["mean_jaccard_ci95"]
        verdict = "met" if tj >= TARGETS[name] else "NOT met"
        print(f"{name:14s} n={m['n']:5d}  mean Jaccard {mj:.3f} [{mj_lo:.3f}, {mj_hi:.3f}]  "
              f"thresholded Jaccard {tj:.3f} [{tj_lo:.3f}, {tj_hi:.3f}]  below 0.65: {m['share_below_0.65']:.1%}  "
              f"target {TARGETS[name]:.2f} {verdict}  ({m['n'] / seconds:.1f} img/s, TTA {'off' if args.no_tta else 'flips'})")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "segmentation_figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures else 1


if __name__ == "__main__":
    sys.exit(main())
