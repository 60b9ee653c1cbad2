"""The one object that loads a model once and answers for paths, PIL images and arrays.

    photo ─► data.io.load_image ─► eval transform ─► network ─► softmax over training classes
          ─► taxonomy tree sum (every node) ─► top-5 diseases ─► triage at the stored operating point
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dermlens.data.io import ImageDecodeError, load_image
from dermlens.data.transforms import build_eval_transform
from dermlens.models import ModelConfig, load_model
from dermlens.taxonomy import Taxonomy, default_taxonomy, tree_sum_matrix

BUNDLED_MODEL_DIR = Path(__file__).parent / "weights"


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


@dataclass
class Prediction:
    image: str
    probabilities: dict[str, float] = field(default_factory=dict)  # every taxonomy node
    top5: list[tuple[str, float]] = field(default_factory=list)  # training-class nodes, most likely first
    triage: str = ""  # "refer" or "reassure"; empty when the image failed
    error: str = ""

    def to_dict(self) -> dict:
        return {
            "image": self.image,
            "error": self.error,
            "triage": self.triage,
            "top5": [{"node": n, "probability": p} for n, p in self.top5],
            "probabilities": self.probabilities,
        }


class Predictor:
    """Load once, predict many. ``Predictor()`` uses the bundled model; ``Predictor("runs/x/model")`` another."""

    def __init__(self, model_dir: str | Path | None = None, taxonomy: Taxonomy | None = None, tta: int = 1,
                 engine: str = "torch", precision: str = "fp32", threads: int | None = None):
        """``engine``: "torch" (``precision`` fp32 or bf16) or "onnx" (ONNX Runtime, fp32 or int8; the fp32 export
        is made and cached on first use, see ``dermlens.deploy``)."""
        self.taxonomy = taxonomy or default_taxonomy()
        self.model_dir = Path(model_dir) if model_dir else bundled_model_dir()
        model, self.config = load_model(self.model_dir, self.taxonomy)
        self.model: torch.nn.Module = model.to(memory_format=torch.channels_last)
        self.transform = build_eval_transform(self.config.preprocessing)
        self.tta = tta
        self.node_ids: list[str] = list(self.taxonomy)
        self._tree_sum = tree_sum_matrix(self.taxonomy, self.config.classes).astype(np.float64)  # (nodes, classes)
        from dermlens.deploy.engines import make_engine

        self.engine = make_engine(self.model_dir, self.model, self.config, engine, precision, threads)

    @property
    def operating_point(self):
        return self.config.operating_point

    def preprocess(self, image) -> torch.Tensor:
        return self.transform(load_image(image))

    def class_probabilities(self, batch: torch.Tensor) -> np.ndarray:
        probs = self.engine.class_probabilities(batch, self.tta).double().numpy()
        return probs / probs.sum(1, keepdims=True)  # float32 softmax sums drift; the tree sum should not

    def node_probabilities(self, class_probs: np.ndarray) -> np.ndarray:
        """(batch, nodes): the probability of a node is the sum over the training classes at or below it."""
        return class_probs @ self._tree_sum.T

    def _describe(self, name: str, class_probs: np.ndarray, node_probs: np.ndarray) -> Prediction:
        op = self.config.operating_point
        p_node = dict(zip(self.node_ids, (float(p) for p in node_probs)))
        order = np.argsort(-class_probs)[:5]
        return Prediction(
            image=name,
            probabilities=p_node,
            top5=[(self.config.classes[i].node, float(class_probs[i])) for i in order],
            triage="refer" if p_node[op.node] >= op.threshold else "reassure",
        )

    def predict(self, images: Sequence, names: Sequence[str] | None = None, batch_size: int = 32) -> list[Prediction]:
        """Predict for paths, bytes, PIL images or arrays. A bad image yields a Prediction with ``error`` set."""
        names = list(names) if names is not None else [str(i) if isinstance(i, (str, Path)) else f"<image {k}>" for k, i in enumerate(images)]
        results: list[Prediction | None] = [None] * len(images)
        for start in range(0, len(images), batch_size):
            tensors, slots = [], []
            for k in range(start, min(start + batch_size, len(images))):
                try:
                    tensors.append(self.preprocess(images[k]))
                    slots.append(k)
                except ImageDecodeError as e:
                    results[k] = Prediction(image=names[k], error=e.reason)
            if tensors:
                yield_batch = self.predict_tensors(torch.stack(tensors), [names[k] for k in slots])
                for k, prediction in zip(slots, yield_batch):
                    results[k] = prediction
        return results  # type: ignore[return-value]

    def predict_tensors(self, batch: torch.Tensor, names: Iterable[str]) -> list[Prediction]:
        """For callers that prepare tensors themselves (a DataLoader with workers, the web service)."""
        class_probs = self.class_probabilities(batch)
        node_probs = self.node_probabilities(class_probs)
        return [self._describe(n, c, p) for n, c, p in zip(names, class_probs, node_probs)]

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

    def predict_one(self, image, name: str = "<image>") -> Prediction:
        return self.predict([image], [name])[0]


def describe_model(config: ModelConfig) -> str:
    op = config.operating_point
    return (
        f"{config.arch} at {config.preprocessing.size}px, {len(config.classes)} training classes, "
        f"taxonomy {config.taxonomy_version}; refer when P({op.node}) >= {op.threshold:.3f} ({op.chosen_on})"
    )
