"""Time to screen one 1024x768 photo holding 10 lesions (detector, crops through the classifier, both lesion heads,
ranking), with the bundled model and heads.

    python benchmarks/screen_speed.py [--threads 2] [--repeats 5]

The photo is generated (``screen_scenes`` skin with ten dark, soft-edged spots of 24-60 px, hair and a shadow), so no
data is needed. Prints the median and best of ``--repeats`` runs after one warm-up, the stages' shares, the number
of candidates and lesions, the process's CPU time (the work itself, whatever the load), the CPU and the load average
at the time (a shared machine's wall times vary with it).
"""
from __future__ import annotations

import argparse
import os
import time

import cv2
import numpy as np
import screen_scenes  # beside this script
import torch
from screen_loo_fit import cpu_name

from dermlens.screen.detect import detect_candidates
from dermlens.screen.screener import Screener


def ten_lesion_photo(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    skin, _ = screen_scenes.make_background(768, 1024, 0.35, rng, clutter=False)
    for i in range(10):
        cx, cy = 100 + (i % 5) * 200, 200 + (i // 5) * 350
        r = int(rng.uniform(12, 30))
        layer = np.zeros((768, 1024), np.float32)
        cv2.ellipse(layer, (cx, cy), (r, int(r * rng.uniform(0.7, 1.0))), float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        layer = cv2.GaussianBlur(layer, (0, 0), 2.0) * rng.uniform(0.4, 0.7)
        skin *= (1 - layer)[..., None]
    return screen_scenes.finish_photo(skin, rng)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    photo = ten_lesion_photo()
    screener = Screener()
    screener.screen([photo], names=["ten.jpg"])  # warm-up
    totals, detects, cpu = [], [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        detect_candidates(photo, screener.config.detector)
        detects.append(time.perf_counter() - start)
        start, start_cpu = time.perf_counter(), time.process_time()
        result = screener.screen([photo], names=["ten.jpg"])[0]
        totals.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    print(f"1024x768, {len(result.lesions)} lesions kept of {result.candidates} candidates; {args.threads} threads; "
          f"{cpu_name()}; load average {os.getloadavg()[0]:.1f}")
    print(f"  whole screen: median {np.median(totals):.2f} s, best {min(totals):.2f} s "
          f"(detector alone: median {np.median(detects):.2f} s)")
    # on a shared machine the wall time mostly measures the queue; the process's CPU time is the work itself, and
    # on an idle machine the wall time would lie between CPU time / threads and CPU time
    print(f"  CPU time of the whole screen: median {np.median(cpu):.2f} s (all threads together)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
