"""The one object that loads a model once and answers for paths, PIL images and arrays with one
:class:`~dermlens.predict.analysis.Analysis` per photo.

    photo ─► data.io.load_image ─► eval transform ─► network ─► softmax over training classes (+ the embedding)
          ─► taxonomy tree sum (every node) ─► top-5 diseases
          ─► modality (given, or recognised from the embedding) ─► referral at that modality's operating point
          ─► the gate (dermlens.gate: not skin, poor photo, out of distribution) ─► triage retake / cannot_assess
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from dermlens.data.io import ImageDecodeError, load_image
from dermlens.data.orientation import build_orientation_exact_transform
from dermlens.data.transforms import build_eval_transform
from dermlens.gate import Gate, GateVerdict, not_checked
from dermlens.models import ModelConfig, load_model
from dermlens.models.features import pre_logits
from dermlens.models.inference import tta_views
from dermlens.models.modality import ModalityRecogniser, check_modality
from dermlens.predict.analysis import Analysis, Prediction
from dermlens.taxonomy import Taxonomy, TreeSum, default_taxonomy

BUNDLED_MODEL_DIR = Path(__file__).resolve().parent.parent / "weights"


class NoModelError(RuntimeError):
    pass


def bundled_model_dir() -> Path:
    """The model that ships inside the package, or a clear error saying how to train one."""
    if (BUNDLED_MODEL_DIR / "config.json").is_file():
        return BUNDLED_MODEL_DIR
    raise NoModelError(
        "no bundled model in this installation; train one with `dermlens train --data DATA --out runs/x` "
        "and pass `--model runs/x/model`"
    )


def _normalised(probabilities: torch.Tensor) -> np.ndarray:
    """float64 rows summing to 1: float32 softmax sums drift, and the tree sum should not."""
    probs = probabilities.double().numpy()
    return probs / probs.sum(1, keepdims=True)


def _is_single_image(images) -> bool:
    """A path, bytes, a PIL image or a (H, W[, C]) array: one image where a sequence of them was expected."""
    from PIL import Image

    return (isinstance(images, (str, Path, bytes, bytearray, memoryview, Image.Image))
            or (isinstance(images, np.ndarray) and images.ndim in (2, 3)))


class Predictor:
    """Load once, predict many. ``Predictor()`` uses the bundled model; ``Predictor("runs/x/model")`` another."""

    def __init__(self, model_dir: str | Path | None = None, taxonomy: Taxonomy | None = None, tta: int = 1,
                 engine: str = "auto", precision: str = "fp32", threads: int | None = None, gate: bool = True):
        """``engine``: "auto" (the default: ONNX Runtime fp32 when onnxruntime is installed and the model exports,
        else PyTorch fp32; the same probabilities within 1e-5), "torch" (``precision`` fp32 or bf16; ask for it
        when autograd is needed, e.g. saliency) or "onnx" (ONNX Runtime, fp32 or int8). The fp32 export is made on
        first use and cached by the weights' digest (see ``dermlens.deploy.onnx_export``); ``engine_name`` says
        which engine runs. ``self.model`` is the PyTorch network whatever the engine.
        ``gate=False`` (research use) answers for every photo without checking it, and says so in each prediction
        (``quality`` is ``not_checked``)."""
        if not 1 <= tta <= 8:  # never clamped silently: 100 views would quietly be 8
            raise ValueError(f"tta must be 1-8 test-time augmentation views; got {tta}")
        self.taxonomy = taxonomy or default_taxonomy()
        self.model_dir = Path(model_dir) if model_dir else bundled_model_dir()
        model, self.config = load_model(self.model_dir, self.taxonomy)
        self.model: torch.nn.Module = model.to(memory_format=torch.channels_last)
        # orientation averaging answers alike for a photo and its quarter turn only if the input turns with the photo
        self.transform = (build_orientation_exact_transform if tta > 1 else build_eval_transform)(self.config.preprocessing)
        self.tta = tta
        self.node_ids: list[str] = list(self.taxonomy)
        self.tree_sum = TreeSum(self.taxonomy, self.config.classes)
        self.modality_recogniser = ModalityRecogniser.load(self.model_dir)
        self.gate: Gate | None = Gate.load(self.model_dir, self.config) if gate else None
        from dermlens.predict.engines import make_engine

        # an exact engine gives each view's embedding with its probabilities: one pass per view serves the
        # diagnosis, the modality recogniser and the gate
        self.engine = make_engine(self.model_dir, self.model, self.config, engine, precision, threads)

    @property
    def engine_name(self) -> str:
        """The engine that runs, e.g. "onnx fp32" or "torch fp32" (what ``engine="auto"`` chose)."""
        return self.engine.name

    @property
    def operating_point(self):
        return self.config.operating_point

    def preprocess(self, image) -> torch.Tensor:
        return self.transform(load_image(image))

    def class_probabilities(self, batch: torch.Tensor) -> np.ndarray:
        return _normalised(self.engine.class_probabilities(batch, self.tta))

    def node_probabilities(self, class_probs: np.ndarray) -> np.ndarray:
        """(batch, nodes): the probability of a node is the sum over the training classes at or below it."""
        return self.tree_sum(class_probs)

    def embeddings(self, batch: torch.Tensor) -> torch.Tensor:
        """(batch, features): the network's last hidden layer, for the modality recogniser."""
        return pre_logits(self.model, batch)

    def modalities(self, batch: torch.Tensor, modality: str | None,
                   embeddings: torch.Tensor | None = None) -> tuple[list[str], str]:
        """Each image's modality and where it came from: the caller's word, else the recogniser's."""
        modality = check_modality(modality)
        if modality is not None:
            return [modality] * len(batch), "given"
        if self.modality_recogniser is None:  # a model trained on one modality has one operating point
            return [""] * len(batch), ""
        features = self.embeddings(batch) if embeddings is None else embeddings
        return self.modality_recogniser.recognise(features), "recognised"

    def gate_verdicts(self, batch: torch.Tensor, embeddings: torch.Tensor | None = None,
                      shorter_sides: Sequence[int] | None = None) -> list[GateVerdict]:
        """The gate's verdict on each model input (``not_checked`` when the gate is off)."""
        if self.gate is None:
            return [not_checked() for _ in range(len(batch))]
        if self.gate.fitted and embeddings is None:
            embeddings = self.embeddings(batch)
        return self.gate.verdicts_for_inputs(batch, self.config.preprocessing, embeddings, shorter_sides)

    def _analysis(self, name: str, class_probs: np.ndarray, node_probs: np.ndarray, modality: str = "",
                  modality_source: str = "", verdict: GateVerdict | None = None,
                  embedding: np.ndarray | None = None) -> Analysis:
        op = self.config.operating_point_for(modality)
        p_node = dict(zip(self.node_ids, (float(p) for p in node_probs)))
        order = np.argsort(-class_probs)[:5]
        referral = op.triage(p_node)
        return Analysis(
            image=name,
            probabilities=p_node,
            top5=[(self.config.classes[i].node, float(class_probs[i])) for i in order],
            triage=(verdict and verdict.triage) or referral,
            modality=modality,
            modality_source=modality_source,
            gate=verdict,
            operating_point=op,
            referral=referral,
            class_probabilities=class_probs,
            embedding=embedding,
        )

    def analyse(self, images: Sequence, names: Sequence[str] | None = None, batch_size: int = 32,
                modality: str | None = None, *, tta: int | None = None,
                with_embedding: bool = False) -> list[Analysis]:
        """One :class:`Analysis` per path, bytes, PIL image or array; a bad image yields one with ``error`` set.

        ``modality`` ("dermoscopic" or "clinical") picks that modality's operating point; None recognises it.
        ``tta``: test-time augmentation views for this call (default: the Predictor's). ``with_embedding``: fill
        ``Analysis.embedding`` even where no other part needed it (it comes free with an exact engine and no TTA).
        """
        check_modality(modality)
        if _is_single_image(images):  # analyse("x.jpg") means one photo, not one per character
            images = [images]
            names = [names] if isinstance(names, str) else names
        names = list(names) if names is not None else [str(i) if isinstance(i, (str, Path)) else f"<image {k}>" for k, i in enumerate(images)]
        results: list[Analysis | None] = [None] * len(images)
        for start in range(0, len(images), batch_size):
            tensors, slots, sides = [], [], []
            for k in range(start, min(start + batch_size, len(images))):
                try:
                    image = load_image(images[k])
                    tensors.append(self.transform(image))
                    sides.append(min(image.size))
                    slots.append(k)
                except ImageDecodeError as e:
                    results[k] = Analysis(image=names[k], error=e.reason)
            if tensors:
                analyses = self.analyse_tensors(torch.stack(tensors), [names[k] for k in slots], modality, sides,
                                                tta=tta, with_embedding=with_embedding)
                for k, analysis in zip(slots, analyses):
                    results[k] = analysis
        return results  # type: ignore[return-value]

    def analyse_tensors(self, batch: torch.Tensor, names: Iterable[str], modality: str | None = None,
                        shorter_sides: Sequence[int] | None = None, *, tta: int | None = None,
                        with_embedding: bool = False) -> list[Analysis]:
        """For callers that prepare tensors themselves (a DataLoader with workers).

        ``shorter_sides``: each decoded photo's shorter side in pixels, for the gate's resolution check (skipped
        when not given: the tensor alone no longer knows)."""
        tta = self.tta if tta is None else tta
        if not 1 <= tta <= 8:
            raise ValueError(f"tta must be 1-8 test-time augmentation views; got {tta}")
        embeddings = None
        views = tta_views(batch, tta)
        if self.engine.exact:  # one pass per view gives its probabilities and its embedding
            outputs = [self.engine.probabilities_and_embeddings(view.contiguous()) for view in views]
            class_probs = _normalised(torch.stack([p for p, _ in outputs]).mean(0))
            embeddings = torch.stack([e for _, e in outputs])  # (views, batch, features)
        else:
            class_probs = _normalised(self.engine.class_probabilities(batch, tta))
        node_probs = self.node_probabilities(class_probs)
        if embeddings is None and (with_embedding or (self.gate is not None and self.gate.fitted)
                                   or (check_modality(modality) is None and self.modality_recogniser is not None)):
            embeddings = torch.stack([self.embeddings(view) for view in views])  # extra passes (int8, bf16)
        # every view's embedding counts, so the modality and the gate turn with the photo as the diagnosis does;
        # the analysis carries the views' mean (the lesion head and the screen's ranking read one vector a photo)
        mean_embedding = None if embeddings is None else embeddings.mean(0)
        modalities, source = self.modalities(batch, modality, mean_embedding)
        verdicts = self.gate_verdicts(batch, embeddings, shorter_sides)
        rows = mean_embedding.numpy() if mean_embedding is not None else [None] * len(class_probs)
        return [self._analysis(n, c, p, m, source, v, e)
                for n, c, p, m, v, e in zip(names, class_probs, node_probs, modalities, verdicts, rows)]

    def wide_field_verdict(self, image) -> GateVerdict:
        """The gate on a whole wide-field photo (``dermlens screen``): exposure and blankness only, on the photo as
        the model would read it; ``not_checked`` when the gate is off."""
        if self.gate is None:
            return not_checked()
        return self.gate.photo_verdict_for_input(self.transform(load_image(image)), self.config.preprocessing)

    # The names of earlier versions: the same analysis.
    def predict(self, images: Sequence, names: Sequence[str] | None = None, batch_size: int = 32,
                modality: str | None = None) -> list[Prediction]:
        return self.analyse(images, names, batch_size, modality)

    def predict_tensors(self, batch: torch.Tensor, names: Iterable[str], modality: str | None = None,
                        shorter_sides: Sequence[int] | None = None) -> list[Prediction]:
        return self.analyse_tensors(batch, names, modality, shorter_sides)

    def predict_one(self, image, name: str = "<image>", modality: str | None = None) -> Prediction:
        return self.analyse([image], [name], modality=modality)[0]

    def analyse_records(self, records: Sequence, batch_size: int = 32, num_workers: int = 2, progress: bool = True,
                        modality: str | None = None) -> list[Analysis]:
        """One :class:`Analysis` per labelled record (``Analysis.image`` is its path); decoding runs in worker
        processes. The gate's resolution check is skipped (the decoded size does not leave the workers).
        ``modality`` None: each record's own labelled modality where it states one (dermoscopic, clinical), as
        ``dermlens predict --modality M`` would be told, else recognised."""
        from torch.utils.data import DataLoader
        from tqdm.auto import tqdm

        from dermlens.data.torch_dataset import RecordDataset
        from dermlens.models.modality import MODALITIES

        loader = DataLoader(RecordDataset(records, self.transform), batch_size=batch_size, num_workers=num_workers)
        out: list[Analysis] = []
        with tqdm(total=len(records), desc="predict", unit="img", disable=not progress, leave=False) as bar:
            for images, _ in loader:
                batch = records[len(out): len(out) + len(images)]
                stated = [modality or (r.modality if r.modality in MODALITIES else None) for r in batch]
                answers: list[Analysis | None] = [None] * len(batch)
                for m in dict.fromkeys(stated):  # one call per modality in the batch, in first-seen order
                    rows = [i for i, s in enumerate(stated) if s == m]
                    for i, a in zip(rows, self.analyse_tensors(images[rows], [str(batch[i].path) for i in rows], m)):
                        answers[i] = a
                out += answers
                bar.update(len(images))
        return out

    def predict_records(self, records: Sequence, batch_size: int = 32, num_workers: int = 2, progress: bool = True) -> np.ndarray:
        """Class probabilities (n, n_classes) for labelled records; decoding runs in worker processes."""
        from torch.utils.data import DataLoader
        from tqdm.auto import tqdm

        from dermlens.data.torch_dataset import RecordDataset

        loader = DataLoader(RecordDataset(records, self.transform), batch_size=batch_size, num_workers=num_workers)
        out = []
        with tqdm(total=len(records), desc="predict", unit="img", disable=not progress, leave=False) as bar:
            for images, _ in loader:
                out.append(self.engine.class_probabilities(images, self.tta))
                bar.update(len(images))
        return (torch.cat(out) if out else torch.empty(0, len(self.config.classes))).double().numpy()


def describe_model(config: ModelConfig) -> str:
    op = config.operating_point
    per_modality = "".join(
        f"; {m} photos: P({o.node}) >= {o.threshold:.3f} ({o.chosen_on})" for m, o in config.operating_points.items()
    )
    return (
        f"{config.arch} at {config.preprocessing.size}px, {len(config.classes)} training classes, "
        f"taxonomy {config.taxonomy_version}; refer when P({op.node}) >= {op.threshold:.3f} ({op.chosen_on})"
        + per_modality
    )
