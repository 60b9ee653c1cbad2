"""The training recipe, readable top to bottom (in the manner of torchvision's reference scripts).

    labels ──► taxonomy nodes ──► partition into training classes ──► targets
    ImageNet backbone, new head (one output per class), all layers fine-tuned
    AdamW, linear warm-up then cosine decay (a pure function of the step, so a resumed run follows the same curve)
    class imbalance: square-root re-balancing, half by sampling and half by loss weights (see README)
    every epoch: validate, checkpoint, log; keep the best model; stop early when validation stops improving
    at the end: choose the referral threshold on validation data for a target sensitivity
"""
from __future__ import annotations

import json
import math
import shlex
import sys
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score
from torch.utils.data import DataLoader, WeightedRandomSampler
from tqdm.auto import tqdm

from dermlens.data.records import Record
from dermlens.data.torch_dataset import RecordDataset
from dermlens.data.transforms import build_eval_transform, build_train_transform
from dermlens.evaluate import sensitivity_specificity, threshold_for_sensitivity
from dermlens.models import ModelConfig, OperatingPoint, create_backbone, save_model
from dermlens.models.inference import predict_loader
from dermlens.taxonomy import ClassAssignment, Taxonomy, default_taxonomy, partition, tree_sum_matrix
from dermlens.train.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint


@dataclass
class TrainConfig:
    arch: str = "efficientnet_lite0"
    weights: str | None = None  # local ImageNet weights for archs that do not ship them
    pretrained: bool = True
    image_size: int | None = None  # None: the backbone's own
    max_class_size: float = 1000  # partitioning threshold of Esteva et al.
    epochs: int = 12
    batch_size: int = 32
    lr: float = 6e-4
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    balance: str = "sqrt"  # none | sqrt | loss | sampler
    augment: str = "paper"  # paper | light
    color_constancy: bool = True
    patience: int = 4  # epochs without validation improvement before stopping
    target_sensitivity: float = 0.9  # for the referral threshold on P(malignant)
    val_tta: int = 1
    num_workers: int = 2
    seed: int = 0
    max_steps_per_epoch: int | None = None  # for smoke tests


@dataclass
class TrainResult:
    model_dir: Path
    best_epoch: int
    best_score: float
    history: list[dict]


def _covered(assignment: ClassAssignment, node: str) -> bool:
    """Validation images whose disease no training class covers cannot be scored against the training classes."""
    try:
        assignment.class_index(node)
        return True
    except ValueError:
        return False


def learning_rate(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def class_balance(targets: list[int], n_classes: int, mode: str) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(per-sample sampling weights or None, per-class loss weights).

    Full inverse-frequency balancing ("loss" or "sampler") equalises the classes, which is what balanced accuracy
    and the malignant-class sensitivity reward, but it shows a 80-image class sixty times per epoch (memorised) or
    weighs it sixty-fold (noisy gradients). "sqrt" splits the correction: sampling by 1/sqrt(n) and weighting the
    loss by 1/sqrt(n) together give the same expected balance with far gentler extremes.
    """
    counts = np.bincount(targets, minlength=n_classes).astype(float)
    counts[counts == 0] = 1
    ones = torch.ones(n_classes)
    if mode == "none":
        return None, ones
    if mode == "loss":
        w = counts.sum() / (n_classes * counts)
        return None, torch.tensor(w, dtype=torch.float32)
    if mode == "sampler":
        return torch.tensor(1 / counts[targets], dtype=torch.double), ones
    if mode == "sqrt":
        w = 1 / np.sqrt(counts)
        loss_w = w / (w * counts).sum() * counts.sum()  # mean weight 1 under the re-sampled distribution
        return torch.tensor(w[targets], dtype=torch.double), torch.tensor(loss_w, dtype=torch.float32)
    raise ValueError(f"balance must be none, sqrt, loss or sampler; got {mode!r}")


def choose_operating_point(
    taxonomy: Taxonomy, assignment: ClassAssignment, probs: np.ndarray, label_nodes: list[str], target: float
) -> OperatingPoint:
    """Referral threshold on P(malignant) reaching ``target`` sensitivity on validation data."""
    matrix = tree_sum_matrix(taxonomy, assignment.classes)
    node_index = list(taxonomy).index("malignant")
    p_malignant = probs @ matrix[node_index]
    truth = np.array([taxonomy.ancestor_at_level(n, 1) == "malignant" for n in label_nodes])
    if truth.all() or not truth.any():
        return OperatingPoint(chosen_on="default 0.5: validation data lacks malignant or benign cases")
    threshold = threshold_for_sensitivity(truth, p_malignant, target)
    sens, spec = sensitivity_specificity(truth, p_malignant, threshold)
    return OperatingPoint(
        node="malignant", threshold=threshold, target_sensitivity=target,
        sensitivity=sens, specificity=spec, chosen_on=f"validation ({len(truth)} images, {int(truth.sum())} malignant)",
    )


def train(
    train_records: list[Record],
    val_records: list[Record],
    out_dir: str | Path,
    cfg: TrainConfig = TrainConfig(),
    *,
    resume: bool = False,
    taxonomy: Taxonomy | None = None,
    progress: bool = True,
    provenance: dict | None = None,
) -> TrainResult:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    taxonomy = taxonomy or default_taxonomy()
    torch.manual_seed(cfg.seed)
    if not train_records or not val_records:
        raise ValueError(f"need training and validation images; got {len(train_records)} and {len(val_records)}")

    # 1. Labels -> training classes (the partition) -> integer targets.
    classes = partition(taxonomy, Counter(r.node for r in train_records), cfg.max_class_size)
    assignment = ClassAssignment(taxonomy, classes)
    train_targets = [assignment.class_index(r.node) for r in train_records]
    val_covered = [r for r in val_records if _covered(assignment, r.node)]
    val_targets = [assignment.class_index(r.node) for r in val_covered]

    # 2. Network: ImageNet backbone with a fresh head, every layer trainable.
    model, preprocessing = create_backbone(cfg.arch, len(classes), pretrained=cfg.pretrained, weights=cfg.weights)
    preprocessing = replace(
        preprocessing,
        size=cfg.image_size or preprocessing.size,
        color_constancy="shades_of_gray" if cfg.color_constancy else None,
    )
    model = model.to(memory_format=torch.channels_last)

    # 3. Data: augmentation for training, plain preprocessing for validation; re-balanced sampling.
    sample_weights, loss_weights = class_balance(train_targets, len(classes), cfg.balance)
    train_set = RecordDataset(train_records, build_train_transform(preprocessing, cfg.augment), train_targets)
    val_set = RecordDataset(val_covered, build_eval_transform(preprocessing), val_targets)
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    loader_args = dict(batch_size=cfg.batch_size, num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0)
    val_loader = DataLoader(val_set, shuffle=False, **loader_args)

    # 4. Optimiser and schedule; criterion.
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on norms and biases
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    criterion = torch.nn.CrossEntropyLoss(weight=loss_weights, label_smoothing=cfg.label_smoothing)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)

    # 5. Resume where a killed run left off.
    checkpoint_dir = out_dir / "checkpoint"
    state = {"epoch": 0, "best_score": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": []}
    if resume and has_checkpoint(checkpoint_dir):
        state = load_checkpoint(checkpoint_dir, model, optimizer)
        print(f"resuming after epoch {state['epoch']} from {checkpoint_dir}", file=sys.stderr)
    else:
        if resume:
            print(f"no checkpoint in {checkpoint_dir}; starting from scratch", file=sys.stderr)
        (out_dir / "metrics.jsonl").unlink(missing_ok=True)  # a fresh run starts a fresh log

    log_path = out_dir / "metrics.jsonl"
    config = ModelConfig(
        arch=cfg.arch, preprocessing=preprocessing, classes=list(classes),
        taxonomy_version=taxonomy.version, taxonomy_fingerprint=taxonomy.fingerprint(),
        training={
            "config": asdict(cfg), "n_train": len(train_records), "n_val": len(val_covered),
            "command": shlex.join(["dermlens"] + sys.argv[1:]) if Path(sys.argv[0]).name == "dermlens" else None,
            **(provenance or {}),
        },
    )
    model_dir = out_dir / "model"

    # 6. The epochs.
    while state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.patience:
        epoch = state["epoch"]
        model.train()
        # A generator seeded by epoch: the same batches in a resumed run as in an uninterrupted one.
        generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        if sample_weights is not None:
            sampler = WeightedRandomSampler(sample_weights, len(train_set), replacement=True, generator=generator)
            train_loader = DataLoader(train_set, sampler=sampler, drop_last=True, **loader_args)
        else:
            train_loader = DataLoader(train_set, shuffle=True, generator=generator, drop_last=True, **loader_args)
        started, seen, loss_sum = time.time(), 0, 0.0
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        for step_in_epoch, (images, targets) in enumerate(train_loader):
            if step_in_epoch >= steps_per_epoch:
                break
            step = epoch * steps_per_epoch + step_in_epoch
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total_steps, warmup_steps, cfg.lr)
            images = images.contiguous(memory_format=torch.channels_last)
            loss = criterion(model(images), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(images)
            loss_sum += loss.item() * len(images)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", img_s=f"{seen / (time.time() - started):.0f}")
        bar.close()
        train_seconds = time.time() - started

        probs = predict_loader(model, val_loader, tta=cfg.val_tta).numpy()
        predicted = probs.argmax(1)
        with warnings.catch_warnings():  # a class never predicted early on is expected, not news
            warnings.simplefilter("ignore", UserWarning)
            val_bacc = float(balanced_accuracy_score(val_targets, predicted))
        val_loss = float(torch.nn.functional.nll_loss(torch.log(torch.from_numpy(probs).clamp_min(1e-8)), torch.tensor(val_targets)))
        row = {
            "epoch": epoch + 1, "train_loss": loss_sum / max(1, seen), "val_loss": val_loss,
            "val_balanced_accuracy": val_bacc, "val_accuracy": float((predicted == np.array(val_targets)).mean()),
            "lr": optimizer.param_groups[0]["lr"], "images_per_second": seen / max(train_seconds, 1e-9),
            "seconds": time.time() - started,
        }
        state["history"].append(row)
        with open(log_path, "a") as log:
            log.write(json.dumps(row) + "\n")
        if val_bacc > state["best_score"]:
            state.update(best_score=val_bacc, best_epoch=epoch + 1, bad_epochs=0)
            config.training["best_epoch"] = epoch + 1
            config.training["val_balanced_accuracy_training_classes"] = val_bacc
            save_model(model_dir, model, config)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        save_checkpoint(checkpoint_dir, model, optimizer, state)
        if progress:
            print(
                f"epoch {epoch + 1}: train loss {row['train_loss']:.3f}, val loss {val_loss:.3f}, "
                f"val balanced acc {val_bacc:.3f} ({row['images_per_second']:.0f} img/s)",
                file=sys.stderr,
            )

    # 7. The best epoch's model gets its operating point from validation data.
    from dermlens.models import load_model  # the saved best, not the last epoch

    best, config = load_model(model_dir, taxonomy)
    best = best.to(memory_format=torch.channels_last)
    probs = predict_loader(best, val_loader, tta=cfg.val_tta).numpy()
    config.operating_point = choose_operating_point(
        taxonomy, assignment, probs, [r.node for r in val_covered], cfg.target_sensitivity
    )
    config.training["history"] = state["history"]
    save_model(model_dir, best, config)
    return TrainResult(model_dir, state["best_epoch"], state["best_score"], state["history"])
