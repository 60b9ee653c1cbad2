"""What the service does with one photo, and how it says it: the JSON of ``POST /api/v1/predict`` and
``GET /api/v1/model``. Plain functions of a :class:`~dermlens.predict.Predictor`; no HTTP here.
"""
from __future__ import annotations

import base64
import functools
import io
import json
import time
from pathlib import Path

from PIL import Image

from dermlens.data.io import ImageDecodeError, load_image
from dermlens.explain.saliency import METHODS, overlay, saliency_map
from dermlens.gate import Verdict
from dermlens.predict import BUNDLED_MODEL_DIR, Analysis, Predictor
from dermlens.taxonomy import OperatingPoint, Triage

DISCLAIMER = (
    "Research tool, not a diagnosis. dermlens has not been approved as a medical device; its output must not "
    "replace examination by a qualified clinician. If a lesion changes, bleeds, itches or worries you, see a doctor."
)
OVERLAY_SIDE = 384  # px: sharp on a phone, ~0.3 MB of PNG (a photo does not compress well losslessly)
SERVING_MAX_PIXELS = 50_000_000  # 50 MP: above any phone camera, far below a decompression bomb's memory blow-up


def percent(p: float) -> str:
    return f"{100 * p:.0f}%" if p >= 0.01 or p == 0 else "<1%"


def _in_ten(p: float) -> str:
    return f"{round(10 * p)} of every 10"


def operating_point_summary(predictor: Predictor, op: OperatingPoint, modality: str | None = None) -> str:
    """An operating point (the one applied to a photo of ``modality``) in words a clinician reads in one go."""
    name = predictor.taxonomy[op.node].name.lower()
    rule = f"The model refers a lesion when its probability of being a {name} is {percent(op.threshold)} or more"
    if op.sensitivity is None or op.specificity is None:
        return (
            f"{rule} ({op.chosen_on}). How often this misses a {name} (sensitivity) or refers a harmless lesion "
            "(specificity) was not measured: treat the triage call with extra caution."
        )
    missed = round(10 * (1 - op.sensitivity))
    return (
        f"{rule}. On {op.chosen_on}, where this threshold was chosen, it referred {_in_ten(op.sensitivity)} "
        f"lesions that truly were a {name} (sensitivity {percent(op.sensitivity)}) and reassured "
        f"{_in_ten(op.specificity)} of those that were not (specificity {percent(op.specificity)}): at this setting "
        + (f"about {missed} in 10 would be missed." if missed else "fewer than 1 in 10 would be missed.")
        + external_data_summary(predictor.model_dir, modality)
    )


MODEL_CARD_FIGURES = "model_card_figures.json"
# Per modality: the model card's external set (never trained on) and its figures at this modality's threshold.
EXTERNAL_SETS = {
    "dermoscopic": ("ph2", "PH2 dermoscopy from a clinic it never saw", "melanomas referred (sensitivity)",
                    "melanomas", "nevi reassured (specificity)", "naevi reassured"),
    "clinical": ("sd198_clinical", "SD-198 clinical photos it never saw", "malignant referred (sensitivity)",
                 "malignant lesions", "non-neoplastic referred", "rashes and other non-neoplastic photos referred"),
}


@functools.lru_cache(maxsize=8)
def _model_card_figures(model_dir: str) -> dict:
    """Read once per model folder, not on every request."""
    try:
        return json.loads((Path(model_dir) / MODEL_CARD_FIGURES).read_text())
    except (OSError, ValueError):
        return {}


def external_data_summary(model_dir: Path, modality: str | None) -> str:
    """What the model card measured on external data at the same setting: a threshold chosen on one source's
    validation images can miss more elsewhere, and a clinician should see that next to the validation figure."""
    figures = _model_card_figures(str(model_dir))
    parts = []
    for mod in ([modality] if modality in EXTERNAL_SETS else list(EXTERNAL_SETS)):
        key, where, sens_key, positives, other_key, other_words = EXTERNAL_SETS[mod]
        sens, other = figures.get(key, {}).get(sens_key), figures.get(key, {}).get(other_key)
        if not sens:
            continue
        low, high = sens["ci95"]
        text = f"on {where}, it referred {percent(sens['value'])} of {sens['n']} {positives} (95% CI {percent(low)}-{percent(high)})"
        if other:
            text += f", with {percent(other['value'])} of {other['n']} {other_words}"
        parts.append(text)
    return (" Measured for the model card " + "; ".join(parts) + ".") if parts else ""


# The triage in a few words, the heading of the page's answer (one entry per Triage member).
TRIAGE_CALLS = {
    Triage.REFER: "Refer",
    Triage.NON_NEOPLASTIC: "Likely a skin condition, not a tumour",
    Triage.REASSURE: "No referral suggested",
    Triage.RETAKE: "Please take the photo again",
    Triage.CANNOT_ASSESS: "Cannot assess this photo",
}


def triage_call(analysis: Analysis) -> str:
    """The heading of the page's answer: the triage in a few words, or the screening hint for a wide-field photo."""
    if analysis.gate is not None and analysis.gate.verdict is Verdict.WIDE_FIELD:
        return "Several spots? Use screening"
    return TRIAGE_CALLS.get(analysis.triage, str(analysis.triage))


def triage_summary(predictor: Predictor, analysis: Analysis) -> str:
    if analysis.stopped:  # the photo gate stopped it: say what to do instead
        return analysis.advice
    op = analysis.operating_point
    name = predictor.taxonomy[op.node].name.lower()
    p = analysis.node_probability
    if analysis.triage is Triage.REFER:
        return (
            f"Refer for a specialist's opinion: the model gives a {percent(p)} probability of a {name}, "
            f"at or above the referral threshold of {percent(op.threshold)}."
        )
    if analysis.triage is Triage.NON_NEOPLASTIC:
        p_rash = analysis.probabilities["non_neoplastic"]
        return (
            f"Most likely a non-neoplastic skin disease (such as a rash, an inflammatory disease or an infection): "
            f"the model gives it {percent(p_rash)}, and a {percent(p)} probability of a {name}, below the referral "
            f"threshold of {percent(op.threshold)}. Not a suspected cancer; see a doctor if it persists, spreads or "
            f"worsens. This does not rule out a {name}."
        )
    return (
        f"No referral suggested by the model: it gives a {percent(p)} probability of a {name}, below the referral "
        f"threshold of {percent(op.threshold)}. This does not rule out a {name}."
    )


def _named(predictor: Predictor, nodes, probabilities: dict[str, float]) -> list[dict]:
    # a photo the gate stopped has no probabilities, so no bars
    return [{"node": n, "name": predictor.taxonomy[n].name, "probability": probabilities[n]} for n in nodes if n in probabilities]


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3)  # photos barely compress; level 3 is as small, faster
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def analyse(
    predictor: Predictor,
    data: bytes,
    name: str,
    *,
    max_pixels: int = SERVING_MAX_PIXELS,
    saliency: str | None = "gradcam",
    metadata: dict | None = None,
    modality: str | None = None,
) -> dict:
    """Decode, classify and explain one uploaded photo; the body of a successful ``POST /api/v1/predict``.

    Raises :class:`~dermlens.data.io.ImageDecodeError` for anything that is not a usable photo; the pixel count is
    checked from the header before anything is decoded.
    """
    started = time.perf_counter()
    image = load_image(data, max_pixels=max_pixels, name=name)
    decoded = time.perf_counter()
    analysis = predictor.analyse([image], [name], modality=modality)[0]
    predicted = time.perf_counter()
    body = analysis.to_dict()  # exactly one element of `dermlens predict --format json`
    taxonomy = predictor.taxonomy
    op = analysis.operating_point
    body.update(
        names={t["node"]: taxonomy[t["node"]].name for t in body["top5"]},  # display names of the top-5 diseases
        three_way=_named(predictor, taxonomy.level_nodes(1), body["probabilities"]),
        nine_way=_named(predictor, taxonomy.level_nodes(2), body["probabilities"]),
        triage_call=triage_call(analysis),
        triage_summary=triage_summary(predictor, analysis),
        operating_point={
            "node": op.node, "name": taxonomy[op.node].name, "threshold": op.threshold,
            "probability": None if analysis.stopped else analysis.node_probability, "sensitivity": op.sensitivity,
            "specificity": op.specificity, "target_sensitivity": op.target_sensitivity, "chosen_on": op.chosen_on,
            "summary": operating_point_summary(predictor, op, analysis.modality),
        },
        metadata=dict(metadata or {}),
        metadata_note="recorded with the request only; this model does not use age, sex or site",
        disclaimer=DISCLAIMER,
        model={"arch": predictor.config.arch, "taxonomy_version": predictor.config.taxonomy_version},
    )
    body["gate"] = analysis.gate.to_dict()
    if saliency and not analysis.stopped:  # no heat map over a photo the model does not answer for
        target = analysis.top5[0][0]
        smooth = 2.0 * predictor.config.preprocessing.size / 224 if saliency == "input_gradient" else 0.0
        sal = saliency_map(predictor, image, target_class=target, method=saliency, smooth=smooth)
        picture = overlay(image, sal, max_side=OVERLAY_SIDE)
        body["saliency"] = {
            "method": sal.method, "target": sal.target, "target_name": taxonomy[sal.target].name,
            "view_box": list(sal.view_box), "width": picture.width, "height": picture.height,
            "png_base64": png_base64(picture),
        }
    else:
        body["saliency"] = None
    done = time.perf_counter()
    body["timing_ms"] = {
        "decode": round(1000 * (decoded - started), 1), "predict": round(1000 * (predicted - decoded), 1),
        "saliency": round(1000 * (done - predicted), 1), "total": round(1000 * (done - started), 1),
    }
    return body


def decode_error_status(error: ImageDecodeError) -> int:
    """415 when the bytes are not an image format at all, 422 when they are one but unusable (corrupt, truncated,
    empty, too many pixels)."""
    return 415 if error.reason.startswith("not an image file") else 422


def decode_error_message(error: ImageDecodeError) -> str:
    reason = error.reason
    if "pixels, more than" in reason:
        return f"{error.path}: {reason}; it was refused before decoding. Send a smaller image."
    if reason.startswith("not an image file"):
        return f"{error.path}: this file is not a picture dermlens can read. Send a JPEG or PNG photo."
    return f"{error.path}: the photo could not be read: {reason}. Take or export it again and retry."


# ----------------------------------------------------------------------------------------------------------------
# The model card
# ----------------------------------------------------------------------------------------------------------------

FIGURE_FILES = ("model_card_figures.json", "metrics.json")


def _model_card(model_dir: Path) -> tuple[dict | None, dict | None]:
    """(model card text, figures) from the model folder; the package's MODEL_CARD.md for the bundled model."""
    card_paths = [model_dir / "MODEL_CARD.md"]
    if model_dir.resolve() == BUNDLED_MODEL_DIR.resolve():
        card_paths.append(BUNDLED_MODEL_DIR.parent / "MODEL_CARD.md")
    card = next(({"source": p.name, "markdown": p.read_text()} for p in card_paths if p.is_file()), None)
    figures = None
    for candidate in FIGURE_FILES:
        path = model_dir / candidate
        if path.is_file():
            try:
                figures = {"source": candidate, "figures": json.loads(path.read_text())}
            except json.JSONDecodeError as error:
                figures = {"source": candidate, "error": f"unreadable: {error}"}
            break
    return card, figures


def model_summary(predictor: Predictor, limits: dict) -> dict:
    config = predictor.config
    taxonomy = predictor.taxonomy
    op = config.operating_point
    training = config.training or {}
    card, figures = _model_card(predictor.model_dir)
    return {
        "arch": config.arch,
        "input_size": config.preprocessing.size,
        "preprocessing": config.preprocessing.to_dict(),
        "tta": predictor.tta,
        "engine": predictor.engine_name,
        "taxonomy": {"version": config.taxonomy_version, "fingerprint": config.taxonomy_fingerprint},
        "classes": [
            {"node": c.node, "name": taxonomy[c.node].name, "training_images": c.count, "own_only": c.own_only}
            for c in config.classes
        ],
        "three_way": [{"node": n, "name": taxonomy[n].name} for n in taxonomy.level_nodes(1)],
        "nine_way": [{"node": n, "name": taxonomy[n].name} for n in taxonomy.level_nodes(2)],
        "operating_point": {
            "node": op.node, "name": taxonomy[op.node].name, "threshold": op.threshold,
            "target_sensitivity": op.target_sensitivity, "sensitivity": op.sensitivity,
            "specificity": op.specificity, "chosen_on": op.chosen_on, "summary": operating_point_summary(predictor, op),
        },
        "operating_points": {
            modality: {"threshold": o.threshold, "sensitivity": o.sensitivity, "specificity": o.specificity,
                       "chosen_on": o.chosen_on, "summary": operating_point_summary(predictor, o, modality)}
            for modality, o in config.operating_points.items()
        },
        "training": {
            k: training[k] for k in ("data", "n_train", "n_val", "best_epoch", "val_balanced_accuracy_training_classes")
            if k in training
        },
        "gate": {
            "enabled": predictor.gate is not None,
            "fitted": bool(predictor.gate and predictor.gate.fitted),
            "thresholds": predictor.gate.thresholds.to_dict() if predictor.gate else None,
        },
        "model_card": card,
        "figures": figures,
        "service": {**limits, "saliency_methods": list(METHODS)},
        "disclaimer": DISCLAIMER,
    }
