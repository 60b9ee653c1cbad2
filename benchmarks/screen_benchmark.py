"""A wide-field screening benchmark composed from HAM10000: the labelled folders that `benchmarks/screen.py` scores
and `dermlens screen train-head` learns from.

    python benchmarks/screen_benchmark.py --data ../shared/data/ham10000 --out runs/screen/bench-test --split test --patients 100
    python benchmarks/screen_benchmark.py --data ../shared/data/ham10000 --out runs/screen/bench-train --split train --patients 100

No public wide-field photo set is at hand, so :func:`make_benchmark` builds 'patients': one photo each, generated
skin of a random tone (very light to very dark) with freckles, hair, shadows, sometimes a tattoo or clothing, onto
which real HAM10000 lesions are pasted through their segmentation masks (``screen_scenes``). A patient's ordinary
moles come from one neighbourhood of appearance, the nearest neighbours of a seed nevus in the bundled classifier's
embedding space, so that they look alike as a real patient's moles do; 0 to 2 planted ugly ducklings come from
elsewhere: a melanoma, or a nevus far from the neighbourhood. Sizes are drawn independently of the kind, so size
alone carries no signal.

Use ``--split train`` for anything that learns or is tuned (the lesion head, detector settings) and ``--split test``
for the figures. Written per patient: ``pNNN.jpg`` and ``pNNN.truth.json``; plus ``benchmark.json`` (manifest) and
``embeddings.npz`` (the cached embeddings of the source images); the format is read by ``dermlens.screen.truth``.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import screen_scenes  # beside this script (a script's folder is on sys.path)
from PIL import Image

from dermlens.data.io import load_image
from dermlens.screen.truth import MANIFEST

PHOTO_SIZE = (1024, 768)  # width, height
LESION_DIAMETER = (24.0, 64.0)  # pixels on the 1024 px photo
ORDINARY_PER_PATIENT = (5, 10)
PLANTED_COUNTS = (0, 1, 2)
PLANTED_PROBABILITIES = (0.15, 0.55, 0.3)
NEIGHBOURHOOD = 25  # a patient's ordinary moles are drawn from the seed's this many nearest nevi
MAX_NEVI = 1500  # nevi embedded per split (a random subset; plenty for neighbourhoods, keeps it quick)


@dataclass
class SourceLesion:
    path: Path
    mask: Path
    diagnosis: str
    lesion_id: str


def _source_lesions(data: Path, split: str, seed: int) -> list[SourceLesion]:
    from dermlens.data.datasets import load_records

    records = [r for r in load_records(data) if r.split == split and r.label in ("nv", "mel") and r.metadata.get("mask")]
    if not records:
        raise ValueError(f"{data}: no nevi or melanomas with masks in split {split!r} (is it HAM10000 with masks/?)")
    rng = np.random.default_rng(seed)
    nevi = [r for r in records if r.label == "nv"]
    if len(nevi) > MAX_NEVI:
        nevi = [nevi[i] for i in sorted(rng.choice(len(nevi), MAX_NEVI, replace=False))]
    out = []
    for r in nevi + [r for r in records if r.label == "mel"]:
        mask_path = Path(data) / r.metadata["mask"]
        mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        if mask is not None and screen_scenes.usable_mask(mask):
            out.append(SourceLesion(Path(r.path), mask_path, r.label, r.group or str(r.path)))
    return out


def _embed_sources(sources: list[SourceLesion], cache: Path, predictor, progress: bool) -> np.ndarray:
    """L2-normalised embeddings of the source photos (cached by path in ``cache``)."""
    from tqdm.auto import tqdm

    keys = [str(s.path) for s in sources]
    if cache.is_file():
        saved = np.load(cache, allow_pickle=False)
        if list(saved["paths"]) == keys:
            return saved["embeddings"]
    chunks = []
    for start in tqdm(range(0, len(sources), 32), desc="embed source lesions", unit="batch", disable=not progress):
        analyses = predictor.analyse([s.path for s in sources[start: start + 32]], with_embedding=True)
        chunks.append(np.stack([a.embedding for a in analyses]))
    e = np.concatenate(chunks)
    e /= np.linalg.norm(e, axis=1, keepdims=True) + 1e-12
    np.savez(cache, paths=np.array(keys), embeddings=e)
    return e


def _pick_patient_lesions(rng, sources, embeddings) -> list[tuple[int, str]]:
    """(source index, kind) for one patient: kind is 'ordinary', 'planted_melanoma' or 'planted_far_nevus'."""
    nevi = np.array([i for i, s in enumerate(sources) if s.diagnosis == "nv"])
    melanomas = np.array([i for i, s in enumerate(sources) if s.diagnosis == "mel"])
    seed_nevus = int(rng.choice(nevi))
    similarity = embeddings[nevi] @ embeddings[seed_nevus]
    order = nevi[np.argsort(-similarity)]
    used_lesions: set[str] = set()
    picked: list[tuple[int, str]] = []

    def take(pool, kind, n):
        for i in rng.permutation(pool):
            if len([p for p in picked if p[1] == kind]) >= n:
                break
            if sources[i].lesion_id not in used_lesions:
                used_lesions.add(sources[i].lesion_id)
                picked.append((int(i), kind))

    take(order[:NEIGHBOURHOOD], "ordinary", int(rng.integers(ORDINARY_PER_PATIENT[0], ORDINARY_PER_PATIENT[1] + 1)))
    far = nevi[similarity <= np.quantile(similarity, 0.2)]
    for _ in range(int(rng.choice(PLANTED_COUNTS, p=PLANTED_PROBABILITIES))):
        if rng.random() < 0.5 and len(melanomas):
            take(melanomas, "planted_melanoma", 1 + sum(k == "planted_melanoma" for _, k in picked))
        else:
            take(far, "planted_far_nevus", 1 + sum(k == "planted_far_nevus" for _, k in picked))
    return picked


def make_patient_photo(rng: np.random.Generator, sources: list[SourceLesion], picks: list[tuple[int, str]],
                       size: tuple[int, int] = PHOTO_SIZE) -> tuple[np.ndarray, list[dict], float]:
    """(uint8 RGB photo, ground-truth lesions, skin tone) for one patient."""
    w, h = size
    tone = float(rng.uniform(0, 1))
    image, distractors = screen_scenes.make_background(h, w, tone, rng)
    occupied = distractors.blocked.copy()
    truth = []
    for index, kind in picks:
        src = sources[index]
        rgb = np.asarray(load_image(src.path))  # EXIF, modes and clear errors as everywhere else
        mask = cv2.imread(str(src.mask), cv2.IMREAD_GRAYSCALE)
        if mask.shape != rgb.shape[:2]:
            mask = cv2.resize(mask, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
        diameter = float(rng.uniform(*LESION_DIAMETER))
        sprite = screen_scenes.make_sprite(rgb, mask, diameter, rng)
        spot = screen_scenes.free_spot(occupied, int(max(sprite.alpha.shape) / 2) + 2, rng)
        if spot is None:
            continue
        box = screen_scenes.paste(image, sprite, *spot)
        if box is None:
            continue
        truth.append({"box": box, "planted": kind != "ordinary", "kind": kind, "diagnosis": src.diagnosis,
                      "source": src.path.name, "diameter_px": round(diameter, 1)})
    return screen_scenes.finish_photo(image, rng), truth, tone


def make_benchmark(data: str | Path, out_dir: str | Path, patients: int = 100, seed: int = 0, split: str = "test",
                   predictor=None, progress: bool = True) -> Path:
    """Compose ``patients`` synthetic patients from ``split`` of HAM10000 at ``data``; returns the manifest path."""
    from tqdm.auto import tqdm

    from dermlens.predict import Predictor

    data, out = Path(data), Path(out_dir)
    if not (data / "labels.csv").is_file():
        raise FileNotFoundError(f"{data}: no labels.csv here (expected the HAM10000 folder with images/ and masks/)")
    out.mkdir(parents=True, exist_ok=True)
    sources = _source_lesions(data, split, seed)
    embeddings = _embed_sources(sources, out / "embeddings.npz", predictor or Predictor(engine="torch"), progress)
    manifest = {"split": split, "seed": seed, "data": str(data), "photo_size": list(PHOTO_SIZE),
                "lesion_diameter_px": list(LESION_DIAMETER), "patients": []}
    for p in tqdm(range(patients), desc=f"compose patients ({split})", unit="patient", disable=not progress):
        rng = np.random.default_rng([seed, p])
        picks = _pick_patient_lesions(rng, sources, embeddings)
        photo, truth, tone = make_patient_photo(rng, sources, picks)
        stem = f"p{p:03d}"
        Image.fromarray(photo).save(out / f"{stem}.jpg", quality=92)
        record = {"patient": stem, "image": f"{stem}.jpg", "skin_tone": round(tone, 3), "lesions": truth}
        (out / f"{stem}.truth.json").write_text(json.dumps(record, indent=2) + "\n")
        manifest["patients"].append({"patient": stem, "image": f"{stem}.jpg", "truth": f"{stem}.truth.json"})
    path = out / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="HAM10000 folder with labels.csv, images/ and masks/")
    parser.add_argument("--out", type=Path, required=True, help="benchmark folder: pNNN.jpg, pNNN.truth.json, "
                                                                 "benchmark.json")
    parser.add_argument("--patients", type=int, default=100, help="synthetic patients (one photo each)")
    parser.add_argument("--split", default="test",
                        help="source split: test for figures, train for tuning and the lesion head")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        manifest = make_benchmark(args.data, args.out, patients=args.patients, seed=args.seed, split=args.split,
                                  progress=not args.quiet)
    except (FileNotFoundError, ValueError) as error:
        print(error, file=sys.stderr)
        return 2
    print(f"{args.patients} patients from the {args.split} split: {manifest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
