"""A wide-field screening benchmark composed from HAM10000, and the lesion head trained on one.

No public wide-field photo set is at hand, so :func:`make_benchmark` builds 'patients': one photo each, generated
skin of a random tone (very light to very dark) with freckles, hair, shadows, sometimes a tattoo or clothing, onto
which real HAM10000 lesions are pasted through their segmentation masks (``scene``). A patient's ordinary moles come
from one neighbourhood of appearance, the nearest neighbours of a seed nevus in the bundled classifier's embedding
space, so that they look alike as a real patient's moles do; 0 to 2 planted ugly ducklings come from elsewhere: a
melanoma, or a nevus far from the neighbourhood. Sizes are drawn independently of the kind, so size alone carries
no signal.

Use ``split="train"`` for anything that learns or is tuned (the lesion head, detector settings) and
``split="test"`` for the figures. Written per patient: ``pNNN.jpg`` and ``pNNN.truth.json``; plus
``benchmark.json`` (manifest) and ``embeddings.npz`` (the cached embeddings of the source images).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from dermlens.data.io import load_image
from dermlens.screen import scene

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
        if mask is not None and scene.usable_mask(mask):
            out.append(SourceLesion(Path(r.path), mask_path, r.label, r.group or str(r.path)))
    return out


def _embed_sources(sources: list[SourceLesion], cache: Path, predictor, progress: bool) -> np.ndarray:
    """L2-normalised embeddings of the source photos (cached by path in ``cache``)."""
    from tqdm.auto import tqdm

    from dermlens.screen.screener import CropAnalyser

    keys = [str(s.path) for s in sources]
    if cache.is_file():
        saved = np.load(cache, allow_pickle=False)
        if list(saved["paths"]) == keys:
            return saved["embeddings"]
    analyser = CropAnalyser(predictor)
    chunks = []
    for start in tqdm(range(0, len(sources), 32), desc="embed source lesions", unit="batch", disable=not progress):
        chunks.append(analyser.analyse([s.path for s in sources[start: start + 32]])[0])
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
    image, distractors = scene.make_background(h, w, tone, rng)
    occupied = distractors.blocked.copy()
    truth = []
    for index, kind in picks:
        src = sources[index]
        rgb = np.asarray(load_image(src.path))  # EXIF, modes and clear errors as everywhere else
        mask = cv2.imread(str(src.mask), cv2.IMREAD_GRAYSCALE)
        if mask.shape != rgb.shape[:2]:
            mask = cv2.resize(mask, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
        diameter = float(rng.uniform(*LESION_DIAMETER))
        sprite = scene.make_sprite(rgb, mask, diameter, rng)
        spot = scene.free_spot(occupied, int(max(sprite.alpha.shape) / 2) + 2, rng)
        if spot is None:
            continue
        box = scene.paste(image, sprite, *spot)
        if box is None:
            continue
        truth.append({"box": box, "planted": kind != "ordinary", "kind": kind, "diagnosis": src.diagnosis,
                      "source": src.path.name, "diameter_px": round(diameter, 1)})
    return scene.finish_photo(image, rng), truth, tone


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
    embeddings = _embed_sources(sources, out / "embeddings.npz", predictor or Predictor(), progress)
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
    path = out / "benchmark.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def load_benchmark(folder: str | Path) -> list[dict]:
    """Every patient's truth record, with ``image`` made a full path."""
    folder = Path(folder)
    manifest_path = folder / "benchmark.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: not a screening benchmark (make one with `dermlens screen make-benchmark`)")
    records = []
    for entry in json.loads(manifest_path.read_text())["patients"]:
        truth = json.loads((folder / entry["truth"]).read_text())
        truth["image"] = str(folder / entry["image"])
        records.append(truth)
    return records


def centre_inside(truth_box, box) -> bool:
    """A lesion is found when its centre falls inside a predicted box."""
    cx, cy = (truth_box[0] + truth_box[2]) / 2, (truth_box[1] + truth_box[3]) / 2
    return box[0] <= cx <= box[2] and box[1] <= cy <= box[3]


def match(truth_boxes: list, boxes: list) -> np.ndarray:
    """(n_boxes,) index of the true lesion each predicted box finds (-1: none); each lesion found at most once,
    by the box whose centre is nearest its centre."""
    found = np.full(len(boxes), -1)
    for t, tb in enumerate(truth_boxes):
        hits = [i for i, b in enumerate(boxes) if found[i] < 0 and centre_inside(tb, b)]
        if hits:
            tc = np.array([(tb[0] + tb[2]) / 2, (tb[1] + tb[3]) / 2])
            found[min(hits, key=lambda i: np.linalg.norm(np.array([(boxes[i][0] + boxes[i][2]) / 2, (boxes[i][1] + boxes[i][3]) / 2]) - tc))] = t
    return found


def train_lesion_head(benchmark_dir: str | Path, out_dir: str | Path, model_dir: str | Path | None = None,
                      config=None, target_recall: float = 0.98, progress: bool = True):
    """Fit the lesion/not-lesion head on detector candidates of a benchmark made from the ``train`` split."""
    from tqdm.auto import tqdm

    from dermlens.screen.lesion_head import fit_lesion_head, model_digest
    from dermlens.screen.screener import ScreenConfig, Screener

    folder = Path(benchmark_dir)
    manifest = json.loads((folder / "benchmark.json").read_text()) if (folder / "benchmark.json").is_file() else {}
    if manifest.get("split") == "test":
        raise ValueError(f"{folder}: made from the test split; train the lesion head on a train-split benchmark")
    screener = Screener(model_dir, lesion_head=False, config=config or ScreenConfig())
    features, labels, groups = [], [], []
    for k, record in enumerate(tqdm(load_benchmark(folder), desc="candidates", unit="photo", disable=not progress)):
        result = screener.analyse_photo(record["image"])
        found = match([t["box"] for t in record["lesions"]], [l.box for l in result.lesions])
        for lesion, f in zip(result.lesions, found):
            features.append(lesion.embedding)
            labels.append(f >= 0)
            groups.append(k)
    head = fit_lesion_head(np.stack(features), np.array(labels), np.array(groups), target_recall=target_recall)
    head.info.update({
        "model_digest": model_digest(screener.predictor.model_dir),
        "features": "pre-logit embedding (models.features.pre_logits) of a square crop, "
                    f"{screener.config.crop_context}x the candidate box",
        "trained_on": f"detector candidates of {folder} (split {manifest.get('split', '?')}, "
                      f"{len(load_benchmark(folder))} photos): a candidate holding a pasted HAM10000 lesion's centre "
                      "is a lesion, any other is not",
        "detector": screener.config.detector.to_dict(),
    })
    return head.save(out_dir)
