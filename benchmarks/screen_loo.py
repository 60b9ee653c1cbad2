"""Screening generalisation, leave-one-out over sources and ways of composing (composites of ``screen_compose.py``).

    python benchmarks/screen_compose.py --data /work/shared/data --out runs/screen/loo-test --split test --per-cell 15
    python benchmarks/screen_loo.py --benchmark runs/screen/loo-test --out runs/screen/loo-figures
    # the shipped heads: the recipe fitted on a train-split benchmark (choices were made on its own leave-one-out)
    python benchmarks/screen_compose.py --data /work/shared/data --out runs/screen/loo-train --split train --per-cell 15 --min-solidity 0.7
    python benchmarks/screen_loo.py --benchmark runs/screen/loo-train --recipes emb,either --fit-out src/dermlens/weights/screen --overwrite

For every held-out cell (source S, way W) the lesion head, its threshold and the ugly-duckling mixing weights are
fitted on the patients of *other* sources composed *other* ways (never S, never W, never PH2: an external set is
only tested on), then scored on the cell's patients. Printed and written (figures.json), with 95% bootstrap CIs
resampled by patient: recall and precision of the detector alone and after each head recipe; the planted ugly
duckling's top-1 / top-3 rate for each score; all of it per cell, per held-out source, per way and per skin tone.
An undetected planted lesion is a miss for every score.

The detector runs once per setting (``--detector key=value``); crop embeddings, class probabilities and descriptors
are cached in ``<benchmark>/cache`` (the heavy part), so re-scoring is cheap.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import screen_loo_fit as fitting  # beside this script
import torch
from tqdm.auto import tqdm

from dermlens.data.io import load_image
from dermlens.evaluate.bootstrap import bootstrap_ci
from dermlens.runtime import cpu_name
from dermlens.screen.describe import describe_all
from dermlens.screen.detect import DetectorConfig, detect_candidates
from dermlens.screen.screener import ScreenConfig, Screener, square_crop
from dermlens.screen.truth import load_benchmark, match, read_manifest

FIT_EXCLUDED = ("ph2",)


def loo_split(records: list[dict], source: str, way: str) -> tuple[list[int], list[int]]:
    """(fit, test) patient indices for the held-out cell (source, way): fit on other sources composed other ways,
    never on an external set (PH2); test on the cell."""
    test = [k for k, r in enumerate(records) if r["source"] == source and r["way"] == way]
    fit = [k for k, r in enumerate(records)
           if r["source"] != source and r["way"] != way and r["source"] not in FIT_EXCLUDED]
    return fit, test


def config_key(config: DetectorConfig) -> str:
    import hashlib

    return hashlib.sha1(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:10]


class CropCache:
    """Embedding, class probabilities and descriptors per (photo, box), kept in one npz."""

    def __init__(self, path: Path):
        self.path = path
        self.index: dict[str, int] = {}
        self.rows: dict[str, list] = {"embedding": [], "probs": [], "descriptors": []}
        if path.is_file():
            saved = np.load(path, allow_pickle=False)
            self.index = {k: i for i, k in enumerate(saved["keys"])}
            self.rows = {k: list(saved[k]) for k in self.rows}

    @staticmethod
    def key(image: str, box) -> str:
        return f"{Path(image).name}|{','.join(map(str, box))}"

    def missing(self, image: str, boxes) -> list:
        return [b for b in boxes if self.key(image, b) not in self.index]

    def add(self, image: str, boxes, embeddings, probs, descriptors) -> None:
        for b, e, p, d in zip(boxes, embeddings, probs, descriptors):
            self.index[self.key(image, b)] = len(self.rows["embedding"])
            self.rows["embedding"].append(e.astype(np.float32))
            self.rows["probs"].append(p.astype(np.float32))
            self.rows["descriptors"].append(d.astype(np.float32))

    def get(self, image: str, boxes) -> dict[str, np.ndarray]:
        idx = [self.index[self.key(image, b)] for b in boxes]
        return {k: np.array([v[i] for i in idx]).reshape(len(idx), -1) for k, v in self.rows.items()}

    def save(self) -> None:
        keys = sorted(self.index, key=self.index.get)
        np.savez(self.path, keys=np.array(keys), **{k: np.array(v) for k, v in self.rows.items()})


def collect(records, screener: Screener | None, detector: DetectorConfig, cache_dir: Path, progress=True,
            detector_only: bool = False) -> dict:
    """Flat arrays over every candidate of every photo: patient, box, contrast, diameter, truth index, embedding,
    class probabilities, P(malignant), descriptors."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    det_path = cache_dir / f"candidates-{config_key(detector)}.json"
    detections = json.loads(det_path.read_text()) if det_path.is_file() else {}
    views = screener.predictor.tta if screener else 1
    crops = CropCache(cache_dir / ("crops.npz" if views == 1 else f"crops-tta{views}.npz"))  # each embedding its own
    context = screener.config.crop_context if screener else 0.0
    out = {k: [] for k in ("patient", "box", "contrast", "diameter", "truth")}
    feats = {k: [] for k in ("embedding", "probs", "descriptors")}
    seconds, detected = 0.0, 0
    for k, record in enumerate(tqdm(records, desc="candidates", unit="photo", disable=not progress)):
        name = Path(record["image"]).name
        rgb = None
        if name not in detections:
            rgb = np.asarray(load_image(record["image"]))
            start = time.perf_counter()
            found = detect_candidates(rgb, detector)
            seconds += time.perf_counter() - start
            detected += 1
            detections[name] = [[c.box, c.contrast, c.diameter] for c in found]
        cands = detections[name]
        boxes = [c[0] for c in cands]
        todo = [] if detector_only else crops.missing(name, boxes)
        if todo:
            rgb = np.asarray(load_image(record["image"])) if rgb is None else rgb
            pieces = [square_crop(rgb, b, context) for b in todo]
            analyses = screener.predictor.analyse(pieces, modality="clinical", with_embedding=True)
            emb = np.stack([a.embedding for a in analyses])
            probs = np.stack([a.class_probabilities for a in analyses])
            crops.add(name, todo, emb, probs, describe_all(pieces))
        truth = match([t["box"] for t in record["lesions"]], boxes)
        got = crops.get(name, boxes) if boxes and not detector_only else None
        for i, (box, contrast, diameter) in enumerate(cands):
            out["patient"].append(k)
            out["box"].append(box)
            out["contrast"].append(contrast)
            out["diameter"].append(diameter)
            out["truth"].append(int(truth[i]))
            for key in feats if got is not None else ():
                feats[key].append(got[key][i])
    det_path.write_text(json.dumps(detections))
    crops.save()
    table = {k: np.array(v) for k, v in out.items()}
    table["detect_seconds"] = seconds / max(1, detected)
    if detector_only:
        return table
    table.update({k: np.array(v, dtype=np.float32) for k, v in feats.items()})
    table["p_malignant"] = np.asarray(screener.predictor.tree_sum.node(table["probs"].astype(np.float64),
                                                                        screener.predictor.config.operating_point_for("clinical").node), float)
    return table


def mean_ci(values, groups, n_boot: int) -> list[float]:
    values = np.asarray(values, float)
    if not len(values):
        return [float("nan")] * 3
    low, high = bootstrap_ci(lambda v: float(np.mean(v)), [values], n=n_boot, groups=np.asarray(groups))
    return [float(values.mean()), low, high]


def fmt(triple) -> str:
    m, lo, hi = triple
    return "   n/a" if m != m else f"{m:.3f} [{lo:.3f}, {hi:.3f}]"


def summarise(rows: list[dict], n_boot: int) -> dict:
    """Pool per-patient outcomes (from each cell's own leave-one-out fit) into figures with CIs."""
    out = {"patients": len(rows)}
    lesions = [(r["patient"], x) for r in rows for x in r["found"]]
    out["lesions"] = len(lesions)
    for stage in rows[0]["found_by"] if rows else []:
        found = [(r["patient"], x) for r in rows for x in r["found_by"][stage]]
        right = [(r["patient"], x) for r in rows for x in r["right_by"][stage]]
        out[stage] = {
            "recall": mean_ci([x for _, x in found], [p for p, _ in found], n_boot),
            "precision": mean_ci([x for _, x in right], [p for p, _ in right], n_boot),
            "boxes_per_photo": len(right) / max(1, len(rows)),
        }
    hits = [(r["patient"], h) for r in rows for h in r["planted"]]
    out["planted"] = len(hits)
    methods = hits[0][1].keys() if hits else []
    out["ugly_duckling"] = {m: {f"top{k}": mean_ci([h[m][k] for _, h in hits], [p for p, _ in hits], n_boot)
                                for k in (1, 3)} for m in methods}
    return out


def fit_shipped(records, table, args, manifest, detector: DetectorConfig) -> None:
    """The shipped recipe (embedding head OR descriptor head, learnt ugly-duckling ranker) fitted on every patient
    of a train-split benchmark except the external set's, saved to ``--fit-out``."""
    from dermlens.screen.lesion_head import model_digest
    from dermlens.screen.train_head import fit_screening_heads
    from dermlens.predict import Predictor

    from dermlens.screen.lesion_head import HEAD_WEIGHTS

    if manifest.get("split") == "test":
        raise SystemExit(f"{args.benchmark}: a test-split benchmark; fit the shipped heads on a train-split one")
    if (args.fit_out / HEAD_WEIGHTS).exists() and not args.overwrite:
        raise SystemExit(f"{args.fit_out}: already holds a lesion head; pass --overwrite to replace it")
    rows = np.flatnonzero([records[k]["source"] not in FIT_EXCLUDED for k in table["patient"]])
    truth = table["truth"][rows]
    examples = {k: table[k][rows] for k in ("embedding", "descriptors", "contrast", "diameter", "p_malignant")}
    examples.update(is_lesion=truth >= 0, photo=table["patient"][rows], planted=np.array(
        [t >= 0 and records[k]["lesions"][t]["planted"] for k, t in zip(table["patient"][rows], truth)]))
    out = fit_screening_heads(examples, args.fit_out, args.target_recall, {
        "model_digest": model_digest(Predictor(engine="torch").model_dir),
        "features": "pre-logit embedding (models.features.pre_logits) of a square crop, 1.6x the candidate box",
        "trained_on": f"detector candidates of {args.benchmark} (split {manifest.get('split')}, "
                      f"{len(set(table['patient'][rows].tolist()))} photos; every way of composing: "
                      f"{', '.join(manifest.get('ways', []))}): a candidate holding a composed lesion's centre is a "
                      "lesion, any other is not",
        "detector": detector.to_dict(),
    })
    print(f"shipped heads fitted: {out}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=None, help="folder for figures.json and per_patient.json")
    parser.add_argument("--detector", action="append", default=[], help="detector setting key=value (repeatable)")
    parser.add_argument("--recipes", default="bundled,emb,emb+desc", help="head recipes to score (screen_loo_fit): bundled = the package's embedding head as it is, "
                             "shipped = the package's embedding OR descriptor head, emb, desc, emb+desc, either, "
                             "either-gbm = fitted per held-out cell; the ugly-duckling scores use the last")
    parser.add_argument("--detector-only", action="store_true", help="score the detector alone (no crops embedded)")
    parser.add_argument("--target-recall", type=float, default=0.995)
    parser.add_argument("--fit-out", type=Path, default=None,
                        help="also fit the shipped recipe on all non-PH2 patients (train split only) into this folder")
    parser.add_argument("--overwrite", action="store_true", help="let --fit-out replace heads already there")
    parser.add_argument("--tta", type=int, default=8, help="orientation views per crop (the screener's default 8; "
                        "the shipped heads were fitted on 1-view embeddings, cached as crops.npz)")
    parser.add_argument("--boot", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    overrides = {}
    for item in args.detector:
        key, _, value = item.partition("=")
        overrides[key] = (tuple(float(v) for v in value.split(",")) if key == "scales"
                          else int(value) if key == "median_step" else float(value))
    detector = DetectorConfig(**overrides)
    records = load_benchmark(args.benchmark)
    manifest = read_manifest(args.benchmark)
    screener = None if args.detector_only else Screener(lesion_head=False, config=ScreenConfig(detector=detector),
                                                         tta=args.tta)
    table = collect(records, screener, detector, args.benchmark / "cache", detector_only=args.detector_only)
    cells = sorted({(r["source"], r["way"]) for r in records})
    recipes = [] if args.detector_only else args.recipes.split(",")
    rows = []
    for source, way in tqdm(cells, desc="held-out cells", disable=args.detector_only):
        fit, test = loo_split(records, source, way)
        if args.detector_only:
            rows += fitting.detector_rows(records, table, test)
        else:
            rows += fitting.score_cell(records, table, fit, test, recipes, args.target_recall)
    if args.fit_out:
        fit_shipped(records, table, args, manifest, detector)
    figures = {"benchmark": str(args.benchmark), "split": manifest.get("split"), "detector": detector.to_dict(),
               "recipes": recipes, "target_recall": args.target_recall,
               "detector_seconds_per_photo": table["detect_seconds"], "cpu": cpu_name()}
    groups = {"all": rows}
    groups.update({f"source={s}": [r for r in rows if r["source"] == s] for s in sorted({r["source"] for r in rows})})
    groups.update({f"way={w}": [r for r in rows if r["way"] == w] for w in sorted({r["way"] for r in rows})})
    groups.update({f"cell={s}/{w}": [r for r in rows if (r["source"], r["way"]) == (s, w)] for s, w in cells})
    for name, lo, hi in (("light", 0, 0.33), ("medium", 0.33, 0.67), ("dark", 0.67, 1.01)):
        groups[f"skin={name}"] = [r for r in rows if lo <= r["skin_tone"] < hi]
    figures["groups"] = {name: summarise(g, args.boot) for name, g in groups.items() if g}
    print(f"{len(records)} patients, {len(cells)} held-out cells; detector {figures['detector_seconds_per_photo']:.2f} s/photo "
          f"({figures['cpu']})")
    for name, f in figures["groups"].items():
        print(f"{name}: {f['patients']} patients, {f['lesions']} lesions, {f['planted']} planted")
        for stage in ["detector"] + recipes:
            if stage in f and "recall" in f[stage]:
                s = f[stage]
                print(f"  {stage:<10} recall {fmt(s['recall'])}  precision {fmt(s['precision'])}  ({s['boxes_per_photo']:.1f}/photo)")
        for m, by_k in f["ugly_duckling"].items():
            print(f"  UD {m:<14} top-1 {fmt(by_k['top1'])}  top-3 {fmt(by_k['top3'])}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "figures.json").write_text(json.dumps(figures, indent=1) + "\n")
        (args.out / "per_patient.json").write_text(json.dumps(rows, indent=1, default=float) + "\n")
        print(f"figures: {args.out / 'figures.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
