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
Parameters live beside the model: ``gate_skin_head.safetensors`` + ``.json`` (the skin head, an embedding head
like the modality recogniser; ``gate_wide_head`` likewise, when fitted), ``gate.safetensors`` (the out-of-distribution model) and the thresholds in
``config.json["gate"]``, next to the operating points.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from dermlens.gate.appearance import appearance_features
from dermlens.gate.quality import QualityMeasures, QualityThresholds, downscaled, exposure_problem, measure, unnormalise
from dermlens.gate.verdict import ADVICE, NOT_CHECKED, VERDICTS, GateVerdict, Verdict, not_checked
from dermlens.models.embedding_head import EmbeddingHead

GATE_FILE = "gate.safetensors"
SKIN_HEAD = "gate_skin_head"  # an embedding head: P(skin photo)
WIDE_HEAD = "gate_wide_head"  # an embedding head: P(a wide-field photo of skin)


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

    def __init__(self, thresholds: GateThresholds | None = None, skin_head: EmbeddingHead | None = None,
                 ood: OodModel | None = None, info: dict | None = None, wide_head: EmbeddingHead | None = None,
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
        pre-logits for the same batch (needed when the gate is fitted), or (views, batch, features) for orientation
        averaging (each score then averaged over the views); ``shorter_sides``: of the decoded photos."""
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
        return torch.cat([embeddings, torch.as_tensor(appearance).float()], -1)

    def decide(self, measures: list[QualityMeasures], embeddings: torch.Tensor | None = None,
               appearance: torch.Tensor | None = None) -> list[GateVerdict]:
        """The verdicts from quality measures already taken, the embeddings of the same photos ((batch, features),
        or (views, batch, features) under orientation averaging) and, for a gate fitted with them, their
        appearance statistics."""
        t = self.thresholds
        none = [None] * len(measures)

        def head_score(head):
            if head is None or embeddings is None:
                return none
            views = torch.as_tensor(embeddings)
            views = views[None] if views.dim() == 2 else views
            return np.mean([head.probability(self.features(v, appearance)) for v in views], axis=0)

        p_skin, p_wide = head_score(self.skin_head), head_score(self.wide_head)
        distance = _per_photo(self.ood.distance, embeddings) if self.ood is not None and embeddings is not None else none
        out = []
        for m, p, w, d in zip(measures, p_skin, p_wide, distance):
            p, w = (None if x is None else float(x) for x in (p, w))
            score = None if d is None or t.max_ood_distance is None else float(d) / t.max_ood_distance
            verdict = GateVerdict(Verdict.OK, p_skin=p, p_wide=w, ood_score=score, measures=m)
            if reason := exposure_problem(m, t.quality):  # a washed-out photo has little contrast left, too
                verdict.verdict, verdict.reason = Verdict.POOR_QUALITY, reason
            elif m.contrast < t.quality.min_contrast:
                verdict.verdict, verdict.reason = Verdict.NOT_SKIN, "blank"
            elif w is not None and t.min_p_wide is not None and w >= t.min_p_wide:
                verdict.verdict = Verdict.WIDE_FIELD
            elif p is not None and p < t.min_p_skin:
                verdict.verdict, verdict.reason = Verdict.NOT_SKIN, "not_skin"
            elif m.focus < t.quality.min_focus:
                verdict.verdict, verdict.reason = Verdict.POOR_QUALITY, "out_of_focus"
            elif score is not None and score > 1:
                verdict.verdict = Verdict.OUT_OF_DISTRIBUTION
            out.append(verdict)
        return out

    def photo_verdict(self, m: QualityMeasures) -> GateVerdict:
        """For a wide-field photo (``dermlens screen``): blank or badly exposed only. Its focus, skin head and
        out-of-distribution thresholds were set on close-ups of one lesion, which a body photo is not."""
        q = self.thresholds.quality
        if m.overexposed > q.max_overexposed:
            return GateVerdict(Verdict.POOR_QUALITY, "overexposed", measures=m)
        if m.underexposed > q.max_underexposed or m.brightness < q.min_brightness:
            return GateVerdict(Verdict.POOR_QUALITY, "underexposed", measures=m)
        if m.contrast < q.min_contrast:
            return GateVerdict(Verdict.NOT_SKIN, "blank", measures=m)
        return GateVerdict(Verdict.OK, measures=m)

    def verdicts_for_inputs(self, batch: torch.Tensor, preprocessing, embeddings=None, shorter_sides=None):
        """The same from normalised model inputs, downscaled before unnormalising (affine: the same pixels, a
        quarter of the work)."""
        small = unnormalise(downscaled(batch), preprocessing.mean, preprocessing.std)
        return self.decide(measure(small, shorter_sides, None, min(batch.shape[-2:])), embeddings,
                           appearance_features(small) if self.appearance else None)

    def photo_verdict_for_input(self, image: torch.Tensor, preprocessing) -> GateVerdict:
        """:meth:`photo_verdict` of one wide-field photo from its normalised model input (C, H, W)."""
        return self.photo_verdict(measure(unnormalise(image[None], preprocessing.mean, preprocessing.std))[0])

    # -- persistence ---------------------------------------------------------------------------------------------

    def save(self, model_dir: str | Path, config=None) -> None:
        """Attach the gate to a model folder (``dermlens.models.folder``: atomic, config last): the skin head as an
        embedding head (``gate_skin_head.safetensors`` + ``.json``), the out-of-distribution model in
        ``gate.safetensors``, and the ``gate`` entry of ``config.json`` naming both with the thresholds."""
        from dermlens.models.folder import attach

        model_dir = Path(model_dir)
        if not self.fitted:
            raise ValueError("only a fitted gate is saved; an unfitted one is the default")
        self.skin_head.save(model_dir, SKIN_HEAD)
        entry = {"file": GATE_FILE, "skin_head": SKIN_HEAD, "thresholds": self.thresholds.to_dict(),
                 "head_inputs": "embedding+appearance" if self.appearance else "embedding", **self.info}
        if self.wide_head is not None:
            self.wide_head.save(model_dir, WIDE_HEAD)
            entry["wide_head"] = WIDE_HEAD
        ood = {"ood_mean": self.ood.mean.float(), "ood_components": self.ood.components.float(),
               "ood_variances": self.ood.variances.float(), "ood_noise": torch.tensor([self.ood.noise], dtype=torch.float32)}
        attach(model_dir, {GATE_FILE: ood}, {"gate": entry}, metadata={"format": "dermlens-gate"})
        if config is not None:
            config.gate = entry

    @classmethod
    def load(cls, model_dir: str | Path, config) -> "Gate":
        """The model's fitted gate, or the unfitted default (classical checks only) when its config has none.
        A gate saved by earlier versions (the skin head's folded weights inside ``gate.safetensors``) loads too."""
        entry = getattr(config, "gate", None)
        if not entry:
            return cls()
        path = Path(model_dir) / entry.get("file", GATE_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the model's config names a gate file that is missing; "
                                    "run `dermlens gate fit --model DIR` again")
        t = load_file(str(path))
        if "skin_head" in entry:
            skin_head = EmbeddingHead.load(model_dir, entry["skin_head"])
        else:
            skin_head = EmbeddingHead.from_tensors(t["skin_weight"], t["skin_bias"])
        if "wide_head" in entry:
            wide_head = EmbeddingHead.load(model_dir, entry["wide_head"])
        else:
            wide_head = EmbeddingHead.from_tensors(t["wide_weight"], t["wide_bias"]) if "wide_weight" in t else None
        info = {k: v for k, v in entry.items() if k not in ("file", "skin_head", "wide_head", "thresholds", "head_inputs")}
        return cls(GateThresholds.from_dict(entry["thresholds"]), skin_head,
                   OodModel(t["ood_mean"], t["ood_components"], t["ood_variances"], t["ood_noise"]), info, wide_head,
                   entry.get("head_inputs", "embedding") == "embedding+appearance")


def _per_photo(score, embeddings) -> np.ndarray:
    """A score of each photo's embedding; given (views, batch, features), as orientation averaging passes, the mean
    of its views' scores (a score of the mean embedding would be another statistic than the one fitted)."""
    embeddings = torch.as_tensor(embeddings)
    return score(embeddings) if embeddings.dim() == 2 else np.mean([score(view) for view in embeddings], axis=0)


__all__ = ["ADVICE", "GATE_FILE", "SKIN_HEAD", "WIDE_HEAD", "Gate", "GateThresholds", "GateVerdict", "OodModel", "VERDICTS",
           "NOT_CHECKED", "Verdict", "not_checked"]
