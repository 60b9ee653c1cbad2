"""The gate before the diagnosis: should the model answer for this photo at all?

For every photo it states one verdict, checked in this order (the first that applies wins):

    poor_quality         too small a photo, or over-/under-exposed (``gate.quality``; ``reason`` says which)
    not_skin             a blank picture (no contrast at all)
    wide_field           the wide-field head gives P(a wider area of skin: a back, an arm, several spots) above its
                         threshold: the advice is ``dermlens screen``, not a single-lesion answer
    not_skin             the skin head on the classifier's embedding (and, when fitted so, the photo's colour and
                         texture statistics, ``gate.appearance``) gives P(skin photo) below its threshold
    poor_quality         out_of_focus (``gate.quality``)
    out_of_distribution  skin, but its embedding is far from the training photos' (a Mahalanobis distance under a
                         probabilistic-PCA model of the training embeddings): the classifier's answer is unreliable
    ok                   none of these

Exposure and resolution come first because they say what to do whatever the photo shows (a dark photo of a lesion
looks "not skin" to the head; "too dark" is the useful answer); the skin head comes before focus so that a blurred
cat is "not skin" rather than "retake in focus". Triage follows: ``retake`` for not_skin, wide_field and
poor_quality (another photo would help), ``cannot_assess`` for out_of_distribution (another photo would not).

A model without a fitted gate (no ``gate`` entry in its config) still gets the classical checks with lenient
default thresholds; its predictions say ``gate_fitted: false`` so nobody mistakes that for the full gate.
Parameters live beside the model: ``gate.safetensors`` (skin head, out-of-distribution model) and the thresholds
in ``config.json["gate"]``, next to the operating points.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from dermlens.gate.appearance import appearance_features
from dermlens.gate.quality import QualityMeasures, QualityThresholds, downscaled, exposure_problem, measure, unnormalise

GATE_FILE = "gate.safetensors"
VERDICTS = ("ok", "not_skin", "poor_quality", "out_of_distribution", "wide_field")
NOT_CHECKED = "not_checked"  # what --no-gate writes in place of a verdict

ADVICE = {
    "ok": "",
    "not_skin": "This does not look like a photo of skin. Take a photo of the skin spot itself, filling most of "
                "the picture, and try again.",
    "low_resolution": "The photo is too small to judge. Take it again closer to the spot, with the camera's full "
                      "resolution (no screenshots or thumbnails).",
    "overexposed": "The photo is too bright: the spot is washed out. Take it again in daylight without the flash, "
                   "out of direct sunlight.",
    "underexposed": "The photo is too dark. Take it again in daylight or a well-lit room.",
    "out_of_focus": "The photo is blurred. Hold the camera still, tap the spot to focus, and take it again from "
                    "a little further away if the camera cannot focus that close.",
    "wide_field": "This looks like a photo of a wider area of skin (a back, an arm, several spots) rather than of "
                  "one spot. To check many spots at once, use screening (`dermlens screen`); for one spot, take a "
                  "close-up in which the spot fills most of the picture.",
    "out_of_distribution": "This photo is unlike any the model learned from, so its answer would not be reliable. "
                           "It cannot assess this photo; please show the spot to a doctor.",
    NOT_CHECKED: "The photo gate was switched off (research use): the answer was given without checking the photo.",
}


@dataclass
class GateVerdict:
    verdict: str  # one of VERDICTS, or NOT_CHECKED
    reason: str = ""  # poor_quality: low_resolution / overexposed / underexposed / out_of_focus; not_skin: blank / not_skin
    p_skin: float | None = None
    p_wide: float | None = None  # P(a wide-field photo of skin), when the gate has a wide-field head
    ood_score: float | None = None  # distance / threshold: above 1 is out of distribution
    measures: QualityMeasures | None = None

    @property
    def quality(self) -> str:
        """The ``quality`` column: ``ok``, ``not_skin``, ``poor_quality:<reason>``, ``out_of_distribution`` or
        ``not_checked``."""
        return f"poor_quality:{self.reason}" if self.verdict == "poor_quality" else self.verdict

    @property
    def triage(self) -> str | None:
        """What replaces refer/reassure, or None when the model may answer."""
        if self.verdict in ("not_skin", "poor_quality", "wide_field"):
            return "retake"
        if self.verdict == "out_of_distribution":
            return "cannot_assess"
        return None

    @property
    def advice(self) -> str:
        return ADVICE.get(self.reason if self.verdict == "poor_quality" else self.verdict, "")

    @property
    def stopped(self) -> bool:
        return self.triage is not None


class SkinHead:
    """P(skin photo) from an embedding: a logistic map with the standardisation folded in (as models/modality.py).
    The wide-field head is one too (P(a wide-field photo of skin))."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        self.weight, self.bias = weight.float().reshape(-1), bias.float().reshape(())

    def probability(self, features: torch.Tensor) -> np.ndarray:
        return torch.sigmoid(torch.as_tensor(features).float() @ self.weight + self.bias).numpy()


class OodModel:
    """Mahalanobis distance under a probabilistic PCA of the training embeddings (Tipping & Bishop 1999): the top
    ``k`` directions with their own variances, every other direction with the mean left-over variance. Full
    1280-dimensional covariances cannot be estimated from a thousand photos; this can, and stores in kilobytes."""

    def __init__(self, mean: torch.Tensor, components: torch.Tensor, variances: torch.Tensor, noise: torch.Tensor):
        self.mean = mean.double().reshape(-1)
        self.components = components.double()  # (k, d), orthonormal rows
        self.variances = variances.double().reshape(-1)
        self.noise = float(noise.reshape(()))

    def distance(self, features: torch.Tensor) -> np.ndarray:
        """sqrt(squared distance / dimensions): about 1 for a typical training photo."""
        centred = torch.as_tensor(features).double() - self.mean
        projected = centred @ self.components.T
        residual = (centred * centred).sum(1) - (projected * projected).sum(1)
        squared = (projected ** 2 / self.variances).sum(1) + residual.clamp_min(0) / self.noise
        return torch.sqrt(squared / self.mean.numel()).numpy()

    @classmethod
    def fit(cls, features: np.ndarray, components: int = 64) -> "OodModel":
        from sklearn.decomposition import PCA

        k = int(min(components, len(features) - 1, features.shape[1] - 1))
        pca = PCA(n_components=k, random_state=0).fit(features)
        return cls(torch.tensor(pca.mean_), torch.tensor(pca.components_), torch.tensor(pca.explained_variance_),
                   torch.tensor(max(float(pca.noise_variance_), 1e-8)))


@dataclass
class GateThresholds:
    quality: QualityThresholds = field(default_factory=QualityThresholds)
    min_p_skin: float = 0.5
    max_ood_distance: float | None = None  # None: no out-of-distribution check (unfitted gate)
    min_p_wide: float | None = None  # None: no wide-field check

    def to_dict(self) -> dict:
        return {**self.quality.to_dict(), "min_p_skin": self.min_p_skin, "max_ood_distance": self.max_ood_distance,
                "min_p_wide": self.min_p_wide}

    @classmethod
    def from_dict(cls, d: dict) -> "GateThresholds":
        return cls(QualityThresholds.from_dict(d), float(d.get("min_p_skin", 0.5)), d.get("max_ood_distance"),
                   d.get("min_p_wide"))


class Gate:
    """``verdicts(pixels, embeddings, shorter_sides)`` gives one :class:`GateVerdict` per photo."""

    def __init__(self, thresholds: GateThresholds | None = None, skin_head: SkinHead | None = None,
                 ood: OodModel | None = None, info: dict | None = None, wide_head: SkinHead | None = None,
                 appearance: bool = False):
        self.thresholds = thresholds or GateThresholds()
        self.skin_head, self.ood, self.wide_head = skin_head, ood, wide_head
        self.appearance = appearance  # the heads read the embedding followed by gate.appearance's statistics
        self.info = dict(info or {})  # what it was fitted on, and how it did there

    @property
    def fitted(self) -> bool:
        return self.skin_head is not None and self.ood is not None

    def verdicts(self, pixels: torch.Tensor, embeddings: torch.Tensor | None = None,
                 shorter_sides=None) -> list[GateVerdict]:
        """``pixels``: the model inputs back in [0, 1] (``quality.unnormalise``); ``embeddings``: the classifier's
        pre-logits for the same batch (needed when the gate is fitted); ``shorter_sides``: of the decoded photos."""
        small = downscaled(pixels.float())  # what the quality measures and the appearance statistics read
        return self.decide(measure(small, shorter_sides, None, min(pixels.shape[-2:])), embeddings,
                           appearance_features(small) if self.appearance else None)

    def features(self, embeddings, appearance=None) -> torch.Tensor:
        """What the heads read: the embedding, followed by the appearance statistics when fitted with them."""
        embeddings = torch.as_tensor(embeddings).float()
        if not self.appearance:
            return embeddings
        if appearance is None:
            raise ValueError("this gate's heads read the photo's appearance statistics too; pass them")
        return torch.cat([embeddings, torch.as_tensor(appearance).float()], 1)

    def decide(self, measures: list[QualityMeasures], embeddings: torch.Tensor | None = None,
               appearance: torch.Tensor | None = None) -> list[GateVerdict]:
        """The verdicts from quality measures already taken, the embeddings of the same photos and (for a gate
        fitted with them) their appearance statistics."""
        t = self.thresholds
        none = [None] * len(measures)
        features = self.features(embeddings, appearance) if embeddings is not None and self.skin_head is not None else None
        p_skin = self.skin_head.probability(features) if features is not None else none
        p_wide = self.wide_head.probability(features) if features is not None and self.wide_head is not None else none
        distance = self.ood.distance(embeddings) if self.ood is not None and embeddings is not None else none
        out = []
        for m, p, w, d in zip(measures, p_skin, p_wide, distance):
            p, w = (None if x is None else float(x) for x in (p, w))
            score = None if d is None or t.max_ood_distance is None else float(d) / t.max_ood_distance
            verdict = GateVerdict("ok", p_skin=p, p_wide=w, ood_score=score, measures=m)
            if reason := exposure_problem(m, t.quality):  # a washed-out photo has little contrast left, too
                verdict.verdict, verdict.reason = "poor_quality", reason
            elif m.contrast < t.quality.min_contrast:
                verdict.verdict, verdict.reason = "not_skin", "blank"
            elif w is not None and t.min_p_wide is not None and w >= t.min_p_wide:
                verdict.verdict = "wide_field"
            elif p is not None and p < t.min_p_skin:
                verdict.verdict, verdict.reason = "not_skin", "not_skin"
            elif m.focus < t.quality.min_focus:
                verdict.verdict, verdict.reason = "poor_quality", "out_of_focus"
            elif score is not None and score > 1:
                verdict.verdict = "out_of_distribution"
            out.append(verdict)
        return out

    def photo_verdict(self, m: QualityMeasures) -> GateVerdict:
        """For a wide-field photo (``dermlens screen``): blank or badly exposed only. Its focus, skin head and
        out-of-distribution thresholds were set on close-ups of one lesion, which a body photo is not."""
        q = self.thresholds.quality
        if m.overexposed > q.max_overexposed:
            return GateVerdict("poor_quality", "overexposed", measures=m)
        if m.underexposed > q.max_underexposed or m.brightness < q.min_brightness:
            return GateVerdict("poor_quality", "underexposed", measures=m)
        if m.contrast < q.min_contrast:
            return GateVerdict("not_skin", "blank", measures=m)
        return GateVerdict("ok", measures=m)

    def verdicts_for_inputs(self, batch: torch.Tensor, preprocessing, embeddings=None, shorter_sides=None):
        """The same from normalised model inputs, downscaled before unnormalising (affine: the same pixels, a
        quarter of the work)."""
        small = unnormalise(downscaled(batch), preprocessing.mean, preprocessing.std)
        return self.decide(measure(small, shorter_sides, None, min(batch.shape[-2:])), embeddings,
                           appearance_features(small) if self.appearance else None)

    # -- persistence ---------------------------------------------------------------------------------------------

    def save(self, model_dir: str | Path, config=None) -> None:
        """Write ``gate.safetensors`` and the ``gate`` entry of the model's ``config.json`` (re-read, so nothing
        else in it changes)."""
        from dermlens.models.saved import CONFIG_FILE

        model_dir = Path(model_dir)
        if not self.fitted:
            raise ValueError("only a fitted gate is saved; an unfitted one is the default")
        tensors = {
            "skin_weight": self.skin_head.weight.contiguous(), "skin_bias": self.skin_head.bias.reshape(1),
            "ood_mean": self.ood.mean.float(), "ood_components": self.ood.components.float().contiguous(),
            "ood_variances": self.ood.variances.float(), "ood_noise": torch.tensor([self.ood.noise], dtype=torch.float32),
        }
        if self.wide_head is not None:
            tensors.update(wide_weight=self.wide_head.weight.contiguous(), wide_bias=self.wide_head.bias.reshape(1))
        save_file(tensors, str(model_dir / GATE_FILE), metadata={"format": "dermlens-gate"})
        entry = {"file": GATE_FILE, "thresholds": self.thresholds.to_dict(),
                 "head_inputs": "embedding+appearance" if self.appearance else "embedding", **self.info}
        path = model_dir / CONFIG_FILE
        raw = json.loads(path.read_text())
        raw["gate"] = entry
        path.write_text(json.dumps(raw, indent=2) + "\n")
        if config is not None:
            config.gate = entry

    @classmethod
    def load(cls, model_dir: str | Path, config) -> "Gate":
        """The model's fitted gate, or the unfitted default (classical checks only) when its config has none."""
        entry = getattr(config, "gate", None)
        if not entry:
            return cls()
        path = Path(model_dir) / entry.get("file", GATE_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the model's config names a gate file that is missing; "
                                    "run `dermlens gate fit --model DIR` again")
        t = load_file(str(path))
        info = {k: v for k, v in entry.items() if k not in ("file", "thresholds", "head_inputs")}
        wide = SkinHead(t["wide_weight"], t["wide_bias"]) if "wide_weight" in t else None
        return cls(GateThresholds.from_dict(entry["thresholds"]), SkinHead(t["skin_weight"], t["skin_bias"]),
                   OodModel(t["ood_mean"], t["ood_components"], t["ood_variances"], t["ood_noise"]), info, wide,
                   entry.get("head_inputs", "embedding") == "embedding+appearance")


def not_checked() -> GateVerdict:
    return GateVerdict(NOT_CHECKED)


__all__ = ["ADVICE", "GATE_FILE", "Gate", "GateThresholds", "GateVerdict", "OodModel", "SkinHead", "VERDICTS",
           "NOT_CHECKED", "not_checked"]
