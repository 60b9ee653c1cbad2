"""Compose the leave-one-out screening benchmark: patients from several sources, each composed several ways.

    python benchmarks/screen_compose.py --data /work/shared/data --out runs/screen/loo-test --split test --per-cell 15
    python benchmarks/screen_compose.py --data /work/shared/data --out runs/screen/loo-train --split train --per-cell 15

For every source (HAM10000, ISIC 2017, PH2, DermNet close-ups) and way of composing (``mask``, ``disc``, ``phone``;
see ``screen_sources``) ``--per-cell`` patients, one 1024x768 photo each, skin tones cycling light / medium / dark
and clutter (hair, shadows, tattoo, clothing) on every other patient. A patient's ordinary moles are nearest
neighbours of a seed nevus of the same source in the classifier's embedding (they look alike, as one person's moles
do); 0-2 planted ugly ducklings are a melanoma or a far-away nevus of that source. ``--split test`` composes from
HAM10000 test, ISIC 2017 val, DermNet val+test and all of PH2 (the figures); ``--split train`` from the train splits
without PH2 (the shipped lesion head). Images are read in place from ``--data``; only the composites are written.

Output: the ``dermlens.screen.truth`` folder format (``benchmark.json``, ``pNNN.jpg``, ``pNNN.truth.json``), every
patient also naming its ``source``, ``way``, ``clutter`` and ``skin_tone``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import screen_sources as sources_mod  # beside this script
from PIL import Image

from dermlens.data.io import load_image
from dermlens.screen.truth import MANIFEST

ORDINARY = (5, 9)
PLANTED_COUNTS, PLANTED_P = (0, 1, 2), (0.15, 0.6, 0.25)
TONE_BANDS = ((0.0, 0.33), (0.33, 0.67), (0.67, 1.0))


def embed_sources(lesions, cache: Path, progress: bool) -> np.ndarray:
    """Unit-length classifier embeddings of the source photos, cached by path."""
    from tqdm.auto import tqdm

    from dermlens.predict import Predictor
    from dermlens.screen.screener import CropAnalyser

    keys = [str(s.path) for s in lesions]
    if cache.is_file():
        saved = np.load(cache, allow_pickle=False)
        if list(saved["paths"]) == keys:
            return saved["embeddings"]
    analyser = CropAnalyser(Predictor(engine="torch"))
    chunks = [analyser.analyse([s.path for s in lesions[i: i + 32]])[0]
              for i in tqdm(range(0, len(lesions), 32), desc="embed sources", disable=not progress)]
    e = np.concatenate(chunks)
    e /= np.linalg.norm(e, axis=1, keepdims=True) + 1e-12
    np.savez(cache, paths=np.array(keys), embeddings=e)
    return e


def pick_lesions(rng: np.random.Generator, lesions, embeddings) -> list[tuple[int, str]]:
    """(index, kind) for one patient: kind 'ordinary', 'planted_melanoma' or 'planted_far_nevus'."""
    nevi = np.array([i for i, s in enumerate(lesions) if s.diagnosis == "nv"])
    melanomas = np.array([i for i, s in enumerate(lesions) if s.diagnosis == "mel"])
    seed = int(rng.choice(nevi))
    similarity = embeddings[nevi] @ embeddings[seed]
    order = nevi[np.argsort(-similarity)]
    neighbourhood = order[: max(12, min(25, len(order) // 3))]
    far = nevi[similarity <= np.quantile(similarity, 0.2)]
    picked, used = [], set()

    def take(pool, kind):
        for i in rng.permutation(pool):
            if lesions[i].lesion_id not in used:
                used.add(lesions[i].lesion_id)
                picked.append((int(i), kind))
                return

    for _ in range(int(rng.integers(ORDINARY[0], ORDINARY[1] + 1))):
        take(neighbourhood, "ordinary")
    for _ in range(int(rng.choice(PLANTED_COUNTS, p=PLANTED_P))):
        if rng.random() < 0.6 and len(melanomas):
            take(melanomas, "planted_melanoma")
        else:
            take(far, "planted_far_nevus")
    return picked


def compose_benchmark(data: Path, out: Path, split: str, per_cell: int, seed: int = 0, progress: bool = True) -> Path:
    from tqdm.auto import tqdm

    out.mkdir(parents=True, exist_ok=True)
    manifest = {"split": split, "seed": seed, "data": str(data), "min_solidity": sources_mod.MIN_SOLIDITY, "ways": list(sources_mod.WAYS), "patients": []}
    n = 0
    for source in sources_mod.SOURCES:
        lesions = sources_mod.source_lesions(data, source, split, seed=seed)
        if not lesions:
            continue
        if not any(s.diagnosis == "nv" for s in lesions):
            raise ValueError(f"{data / source}: no usable nevi for split {split}")
        embeddings = embed_sources(lesions, out / f"sources-{source}.npz", progress)
        for w, way in enumerate(sources_mod.WAYS):
            for p in tqdm(range(per_cell), desc=f"{source}/{way}", disable=not progress):
                rng = np.random.default_rng([seed, sources_mod.SOURCES.index(source), w, p])
                picks = pick_lesions(rng, lesions, embeddings)
                pairs = []
                for i, _ in picks:
                    rgb = np.asarray(load_image(lesions[i].path))
                    pairs.append((rgb, sources_mod.read_mask(lesions[i], rgb)))
                low, high = TONE_BANDS[p % 3]
                tone, clutter = float(rng.uniform(low, high)), bool((p // 3) % 2 == 0)
                photo, boxes = sources_mod.compose_photo(pairs, way, tone, clutter, rng)
                truth = [{"box": box, "planted": kind != "ordinary", "kind": kind, "diagnosis": lesions[i].diagnosis,
                          "source": lesions[i].path.name} for (i, kind), box in zip(picks, boxes) if box is not None]
                stem = f"p{n:04d}"
                Image.fromarray(photo).save(out / f"{stem}.jpg", quality=92)
                record = {"patient": stem, "image": f"{stem}.jpg", "source": source, "way": way, "clutter": clutter,
                          "skin_tone": round(tone, 3), "lesions": truth}
                (out / f"{stem}.truth.json").write_text(json.dumps(record, indent=1) + "\n")
                manifest["patients"].append({"patient": stem, "image": f"{stem}.jpg", "truth": f"{stem}.truth.json",
                                             "source": source, "way": way})
                n += 1
    path = out / MANIFEST
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the shared data folder (ham10000/, isic2017/, ph2/, dermnet/)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--split", choices=("test", "train"), default="test")
    parser.add_argument("--per-cell", type=int, default=15, help="patients per source x way")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-solidity", type=float, default=0.0,
                        help="estimated masks less solid than this are skipped (0.7 drops faint scribbles)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if (args.out / MANIFEST).exists():
        print(f"{args.out}: already holds a benchmark; choose another --out", file=sys.stderr)
        return 2
    sources_mod.MIN_SOLIDITY = args.min_solidity
    try:
        path = compose_benchmark(args.data, args.out, args.split, args.per_cell, args.seed, not args.quiet)
    except (FileNotFoundError, ValueError) as error:
        print(error, file=sys.stderr)
        return 2
    print(f"benchmark: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
