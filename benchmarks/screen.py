"""Wide-field screening on the synthetic HAM10000 patients of `benchmarks/screen_benchmark.py`.

    python benchmarks/screen_benchmark.py --data ../shared/data/ham10000 --out runs/screen/bench-test --split test --patients 100
    python benchmarks/screen.py --benchmark runs/screen/bench-test [--out runs/screen/figures-test]

Each benchmark photo is one patient. Prints, with 95% bootstrap CIs resampled by patient:
- detection: recall (a true lesion is found when its centre falls inside a reported lesion box) and precision (a
  reported box is right when it finds a true lesion), for the raw detector and after the lesion head; recall by
  skin tone;
- ugly ducklings: for every planted lesion, its rank among itself and the patient's other reported lesions
  (the other planted one left out): top-1 and top-3 hit rates of the ugly-duckling score against random order
  (exact expectation), size alone and the classifier's P(malignant) alone. An undetected planted lesion is a miss
  for every method.
Writes figures.json and per_patient.json into --out. Nothing is tuned here; tune on a `--split train` benchmark.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dermlens.data.io import load_image
from dermlens.evaluate.bootstrap import bootstrap_ci
from dermlens.screen.detect import detect_candidates
from dermlens.screen.screener import ScreenConfig, Screener
from dermlens.screen.truth import load_benchmark, match, read_manifest


def hit_probability(score_planted: float, others: np.ndarray, k: int) -> float:
    """P(rank <= k) for the planted lesion when ties are broken at random."""
    higher = int((others > score_planted).sum())
    equal = int((others == score_planted).sum())
    # rank is uniform on higher+1 .. higher+equal+1
    ranks = np.arange(higher + 1, higher + equal + 2)
    return float((ranks <= k).mean())


def mean_ci(values, groups, n_boot) -> tuple[float, float, float]:
    values = np.asarray(values, float)
    if not len(values):
        return float("nan"), float("nan"), float("nan")
    low, high = bootstrap_ci(lambda v: float(np.mean(v)), [values], n=n_boot, groups=np.asarray(groups))
    return float(values.mean()), low, high


def fmt(triple) -> str:
    m, lo, hi = triple
    return f"{m:.3f} [{lo:.3f}, {hi:.3f}]"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", type=Path, required=True)
    parser.add_argument("--head", type=Path, default=None, help="lesion head folder (default: bundled)")
    parser.add_argument("--size-weight", type=float, default=0.0)
    parser.add_argument("--limit", type=int, default=None, help="only the first N patients")
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    records = load_benchmark(args.benchmark)[: args.limit]
    manifest = read_manifest(args.benchmark)
    screener = Screener(lesion_head=args.head, config=ScreenConfig(size_weight=args.size_weight))
    det = {"raw_found": [], "found": [], "gt_patient": [], "tone": [], "box_right": [], "box_patient": [], "raw_right": [], "raw_patient": []}
    ud = {m: {1: [], 3: []} for m in ("ugly_duckling", "random", "size", "p_malignant")}
    ud_patient, per_patient = [], []
    seconds = 0.0
    for k, record in enumerate(tqdm(records, desc="screen benchmark", unit="patient")):
        truth = record["lesions"]
        truth_boxes = [t["box"] for t in truth]
        start = time.perf_counter()
        result = screener.screen([record["image"]], patients=[record["patient"]])[0]
        seconds += time.perf_counter() - start
        if result.error:
            raise RuntimeError(f"{record['image']}: {result.error}")
        raw = detect_candidates(np.asarray(load_image(record["image"])), screener.config.detector)
        raw_match = match(truth_boxes, [c.box for c in raw])
        lesions = result.lesions
        found = match(truth_boxes, [l.box for l in lesions])
        for t in range(len(truth)):
            det["raw_found"].append(t in raw_match)
            det["found"].append(t in found)
            det["gt_patient"].append(k)
            det["tone"].append(record["skin_tone"])
        det["box_right"] += list(found >= 0)
        det["box_patient"] += [k] * len(found)
        det["raw_right"] += list(raw_match >= 0)
        det["raw_patient"] += [k] * len(raw_match)

        planted = [t for t, x in enumerate(truth) if x["planted"]]
        scores = {
            "ugly_duckling": np.array([l.ugly_duckling_score for l in lesions]),
            "size": np.array([l.diameter for l in lesions]),
            "p_malignant": np.array([l.p_malignant for l in lesions]),
        }
        patient_row = {"patient": record["patient"], "lesions": len(truth), "reported": len(lesions),
                       "found": int((found >= 0).sum()), "planted": []}
        for t in planted:
            where = np.flatnonzero(found == t)
            competitors = np.array([i for i in range(len(lesions)) if found[i] < 0 or not truth[found[i]]["planted"]], int)
            for kk in (1, 3):
                if not len(where):
                    for m in ud:
                        ud[m][kk].append(0.0)
                    continue
                i = int(where[0])
                for m, s in scores.items():
                    ud[m][kk].append(hit_probability(s[i], s[competitors], kk))
                ud["random"][kk].append(min(kk, len(competitors) + 1) / (len(competitors) + 1))
            ud_patient.append(k)
            patient_row["planted"].append({
                "kind": truth[t]["kind"], "detected": bool(len(where)),
                "rank": int(1 + (scores["ugly_duckling"][competitors] > scores["ugly_duckling"][where[0]]).sum()) if len(where) else None,
                "among": int(len(competitors) + 1),
            })
        per_patient.append(patient_row)

    n_boot = args.boot
    tone = np.array(det["tone"])
    figures = {
        "benchmark": str(args.benchmark), "split": manifest.get("split"), "patients": len(records),
        "true_lesions": len(det["found"]), "planted_lesions": len(ud_patient),
        "detector_only": {"recall": mean_ci(det["raw_found"], det["gt_patient"], n_boot),
                          "precision": mean_ci(det["raw_right"], det["raw_patient"], n_boot),
                          "boxes_per_photo": len(det["raw_right"]) / max(1, len(records))},
        "with_lesion_head": {"recall": mean_ci(det["found"], det["gt_patient"], n_boot),
                             "precision": mean_ci(det["box_right"], det["box_patient"], n_boot),
                             "boxes_per_photo": len(det["box_right"]) / max(1, len(records))},
        "recall_by_skin_tone": {
            name: float(np.mean(np.array(det["found"])[(tone >= lo) & (tone < hi)])) if ((tone >= lo) & (tone < hi)).any() else None
            for name, lo, hi in (("light (0-0.33)", 0, 0.33), ("medium (0.33-0.67)", 0.33, 0.67), ("dark (0.67-1)", 0.67, 1.01))
        },
        "planted_hit_rate": {m: {f"top{kk}": mean_ci(v, ud_patient, n_boot) for kk, v in by_k.items()} for m, by_k in ud.items()},
        "size_weight": args.size_weight,
        "seconds_per_photo": seconds / max(1, len(records)),
    }
    print(f"{figures['patients']} patients ({figures['split']} split), {figures['true_lesions']} lesions, "
          f"{figures['planted_lesions']} planted ugly ducklings; {figures['seconds_per_photo']:.2f} s per photo")
    for stage in ("detector_only", "with_lesion_head"):
        f = figures[stage]
        print(f"  {stage:<17} recall {fmt(f['recall'])}  precision {fmt(f['precision'])}  ({f['boxes_per_photo']:.1f} boxes/photo)")
    print("  recall by skin tone: " + ", ".join(f"{k} {v:.3f}" for k, v in figures["recall_by_skin_tone"].items() if v is not None))
    print("  planted lesion found in the top k (mean [95% CI]):")
    for m, by_k in figures["planted_hit_rate"].items():
        print(f"    {m:<14} top-1 {fmt(by_k['top1'])}   top-3 {fmt(by_k['top3'])}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
        (args.out / "per_patient.json").write_text(json.dumps(per_patient, indent=2) + "\n")
        print(f"figures: {args.out / 'figures.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
