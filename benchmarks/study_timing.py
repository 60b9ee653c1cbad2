"""How long `dermlens study` takes here, stage by stage, from a cold start (no cached features).

    python benchmarks/study_timing.py                                   # embedded synthetic set (the demo)
    python benchmarks/study_timing.py --data ../shared/data/ham10000    # 9-fold HAM10000, fast mode

Prints the wall time of each stage (features, heads, t-SNE, saliency, figures), the feature pass's images/s and
the machine's load average at start, since other work on a 2-core machine changes every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from dermlens.evaluate.readers import SAMPLE_READERS
from dermlens.study.run import StudyConfig, run_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--folds", type=int, default=9)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="default: a fresh temporary folder")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="study-timing-"))
    size = args.image_size or (None if args.data else 128)
    load = os.getloadavg()[0]
    started = time.time()
    run_study(args.data, out, StudyConfig(folds=args.folds, image_size=size), readers=SAMPLE_READERS, progress=False)
    wall = time.time() - started
    metrics = json.loads((out / "metrics.json").read_text())
    t = metrics["study"]["timings"]
    n = metrics["study"]["n_records"]
    print(f"data: {metrics['study']['source']} ({n} images, {args.folds} folds, fast mode, "
          f"{metrics['config']['image_size'] or 'backbone default'} px); load average at start {load:.1f}")
    for key, value in t.items():
        print(f"  {key.replace('_seconds', ''):<10} {value:7.1f} s")
    print(f"  features   {n / t['features_seconds']:7.1f} images/s")
    print(f"  wall clock {wall:7.1f} s (including figures and HTML)   report: {out / 'report.html'}")


if __name__ == "__main__":
    main()
