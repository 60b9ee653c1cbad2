"""The study's saliency grid: for each class, a few test images the model got right and a few it got wrong,
each explained by the paper's input-gradient map and by Grad-CAM (``dermlens.explain.saliency``), and
``explain_image`` for ``dermlens explain IMAGE``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from dermlens.explain.saliency import METHODS, overlay, saliency_map


def select_cases(index: np.ndarray, truth: np.ndarray, predicted: np.ndarray, per_class: int, seed: int = 0) -> list[dict]:
    """Up to ``per_class`` correct and ``per_class`` incorrect cases per true class (a reproducible random draw).

    ``index`` are record indices, ``truth`` and ``predicted`` class indices (truth -1: not covered, skipped).
    """
    rng = np.random.default_rng(seed)
    index, truth, predicted = map(np.asarray, (index, truth, predicted))
    cases = []
    for c in sorted(set(truth[truth >= 0].tolist())):
        for correct in (True, False):
            pool = np.flatnonzero((truth == c) & ((predicted == c) == correct))
            for k in rng.permutation(pool)[:per_class]:
                cases.append({"index": int(index[k]), "truth": int(c), "predicted": int(predicted[k]),
                              "correct": correct})
    return cases


def render_cases(model_dir: Path, records, cases: list[dict], class_nodes: list[str], out_dir: Path,
                 progress: bool = True) -> dict:
    """Write, per case, the overlay of each method (explaining the predicted class); returns the index of files."""
    from dermlens.predict import Predictor

    out_dir.mkdir(parents=True, exist_ok=True)
    predictor = Predictor(model_dir, engine="torch")  # saliency needs autograd; an ONNX export would go unused
    items, failures = [], []
    for n, case in enumerate(tqdm(cases, desc="saliency maps", unit="img", disable=not progress)):
        record = records[case["index"]]
        item = {**case, "path": str(record.path), "truth_node": class_nodes[case["truth"]],
                "predicted_node": class_nodes[case["predicted"]], "overlays": {}}
        try:
            for method in METHODS:
                sal = saliency_map(predictor, record.path, target_class=case["predicted"], method=method,
                                   smooth=2.0 if method == "input_gradient" else 0.0)
                name = f"case{n:03d}-{method}.png"
                overlay(record.path, sal, max_side=224, min_side=160).save(out_dir / name)
                item["overlays"][method] = name
                item["probability"] = sal.probability
        except Exception as e:  # one unreadable or odd image must not cost the whole grid
            failures.append(f"{record.path}: {e}")
            continue
        items.append(item)
    index = {"status": "ok", "dir": out_dir.name, "methods": list(METHODS), "cases": items, "failures": failures,
             "explained": "the predicted class (top training class) of fold 0's model on fold 0's test images"}
    (out_dir / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    return index


def explain_image(image, model_dir: Path | None, out_dir: Path, target: str | None = None) -> dict:
    """``dermlens explain``: the prediction and one overlay per method for one photo, written to ``out_dir``."""
    from dermlens.data.io import load_image
    from dermlens.predict import Predictor

    out_dir.mkdir(parents=True, exist_ok=True)
    # torch: the saliency maps need autograd, and the prediction then comes from the very network they explain
    predictor = Predictor(model_dir, engine="torch")
    photo = load_image(image)
    stem = Path(str(image)).stem if isinstance(image, (str, Path)) else "image"
    prediction = predictor.predict([photo], names=[str(image)])[0]
    written = {}
    for method in METHODS:
        sal = saliency_map(predictor, photo, target_class=target, method=method,
                           smooth=2.0 if method == "input_gradient" else 0.0)
        path = out_dir / f"{stem}-{method}.png"
        overlay(photo, sal).save(path)
        written[method] = {"file": str(path), "target": sal.target, "probability": sal.probability}
    photo.save(out_dir / f"{stem}-input.png")
    result = {"image": str(image), "prediction": prediction.to_dict(), "overlays": written,
              "input": str(out_dir / f"{stem}-input.png")}
    (out_dir / f"{stem}-explanation.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
