"""The training recipe, readable top to bottom (in the manner of torchvision's reference scripts).

    labels ──► taxonomy nodes ──► partition into training classes ──► targets
    ImageNet backbone, new head (one output per class), all layers fine-tuned
    AdamW, linear warm-up then cosine decay (a pure function of the step, so a resumed run follows the same curve)
    class imbalance: square-root re-balancing, half by sampling and half by loss weights (see README)
    every epoch: validate, checkpoint, log; keep the best model (balanced accuracy over training classes, averaged
    over the validation sources so that each dataset counts alike); stop early when validation stops improving
    at the end: choose the referral threshold on validation data for a target sensitivity, overall and per
    modality (dermoscopic, clinical), and fit the modality recogniser on the embedding
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
from dermlens.evaluate.operating_point import choose_operating_point
from dermlens.models import ModelConfig, create_backbone, save_model
from dermlens.models.modality import MODALITIES, fit_modality_head
from dermlens.models.inference import predict_loader
from dermlens.taxonomy import ClassAssignment, Taxonomy, default_taxonomy, partition
from dermlens.taxonomy.partition import esteva_max_class_size
from dermlens.train.checkpoint import has_checkpoint, load_checkpoint, read_progress, save_checkpoint
from dermlens.train.distributed import from_environment


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
    balance: str = "sqrt"  # none | sqrt | tree | loss | sampler
    augment: str = "paper"  # paper | light | camera
    color_constancy: bool = True
    patience: int = 4  # epochs without validation improvement before stopping
    target_sensitivity: float = 0.9  # for the referral threshold on P(malignant)
    val_tta: int = 1
    precision: str = "fp32"  # fp32 | bf16 (autocast for the training step; validation stays fp32)
    num_workers: int = 2
    seed: int = 0
    max_steps_per_epoch: int | None = None  # for smoke tests
    init_from: str | None = None  # a saved dermlens model to start from (same training classes), e.g. a second stage at a higher resolution


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


def _load_initial_weights(model: torch.nn.Module, model_dir: str, classes) -> None:
    """Start from a trained dermlens model; its training classes must be the ones this data partitions into."""
    from safetensors.torch import load_file

    from dermlens.models import read_config

    previous = read_config(model_dir)
    if previous.class_nodes != [c.node for c in classes]:
        raise ValueError(
            f"{model_dir}: its training classes {previous.class_nodes} differ from this run's "
            f"{[c.node for c in classes]}; use the same data and --max-class-size"
        )
    model.load_state_dict(load_file(str(Path(model_dir) / "model.safetensors")))


class RunFolderError(ValueError):
    """A run folder that holds another run: resuming it with other settings, or starting over without --overwrite."""


# Settings a resumed run may change: they do not alter what is learnt, only how fast or how long it waits.
RESUMABLE_CHANGES = ("num_workers", "patience")


def run_settings(cfg: TrainConfig, classes, n_train: int) -> dict:
    """What a checkpoint must agree on with the run that resumes it."""
    settings = {k: v for k, v in asdict(cfg).items() if k not in RESUMABLE_CHANGES}
    return {**settings, "classes": [c.node for c in classes], "n_train": n_train}


def check_resume_settings(saved: dict | None, current: dict, checkpoint_dir: Path) -> None:
    if saved is None:  # checkpoints from before settings were stored
        return
    differences = [
        f"--{key.replace('_', '-')} {saved.get(key)!r} -> {current.get(key)!r}" if key not in ("classes", "n_train")
        else f"{key} {len(saved[key]) if key == 'classes' else saved[key]} -> "
             f"{len(current[key]) if key == 'classes' else current[key]}"
        for key in sorted(set(saved) | set(current)) if saved.get(key) != current.get(key)
    ]
    if differences:
        raise RunFolderError(
            f"{checkpoint_dir}: cannot resume with other settings than the run was started with: "
            + "; ".join(differences) + ". Use the original settings, or --overwrite to start again."
        )


def learning_rate(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def class_balance(
    targets: list[int], n_classes: int, mode: str, class_groups: list[str] | None = None
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(per-sample sampling weights or None, per-class loss weights).

    Full inverse-frequency balancing ("loss" or "sampler") equalises the classes, which is what balanced accuracy
    and the malignant-class sensitivity reward, but it shows a 80-image class sixty times per epoch (memorised) or
    weighs it sixty-fold (noisy gradients). "sqrt" splits the correction: sampling by 1/sqrt(n) and weighting the
    loss by 1/sqrt(n) together give the same expected balance with far gentler extremes.

    "tree" balances down the taxonomy instead, by sampling alone: each first-level group (``class_groups``: the
    Esteva class, e.g. benign melanocytic, inflammatory) is drawn in proportion to the square root of its images,
    and each training class within its group in proportion to the square root of its own. On a pool whose one
    atlas splits into 180 small inflammatory classes, per-class balancing would spend four draws in five on them
    and leave the 6,000 dermoscopic nevi and 1,200 melanomas a sliver; balancing the tree keeps the nine
    questions in proportion and still lifts the small classes (see docs/training.md).
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
    if mode == "tree":
        if class_groups is None or len(class_groups) != n_classes:
            raise ValueError("balance 'tree' needs the first-level group of every training class")
        groups = sorted(set(class_groups))
        group_of = np.array([groups.index(g) for g in class_groups])
        group_counts = np.bincount(group_of, weights=counts, minlength=len(groups))
        root_in_group = np.array([np.sqrt(counts[group_of == group_of[c]]).sum() for c in range(n_classes)])
        class_share = np.sqrt(group_counts[group_of]) / np.sqrt(group_counts).sum() * np.sqrt(counts) / root_in_group
        return torch.tensor((class_share / counts)[targets], dtype=torch.double), ones
    if mode == "sqrt":
        w = 1 / np.sqrt(counts)
        # Mean 1 over the training set (not the re-sampled one); CrossEntropyLoss's weighted mean ignores the scale.
        loss_w = w / (w * counts).sum() * counts.sum()
        return torch.tensor(w[targets], dtype=torch.double), torch.tensor(loss_w, dtype=torch.float32)
    raise ValueError(f"balance must be none, sqrt, tree, loss or sampler; got {mode!r}")


def selection_score(val_targets: list[int], predicted: np.ndarray, sources: list[str]) -> float:
    """Balanced accuracy over training classes on each validation source, averaged over the sources.

    Pooled, HAM10000's 996 validation images would outvote ISIC 2017's 150; a model that generalises must do well on
    each source, so each counts alike. With one source this is the plain balanced accuracy.
    """
    targets = np.asarray(val_targets)
    scores = []
    with warnings.catch_warnings():  # a class never predicted early on is expected, not news
        warnings.simplefilter("ignore", UserWarning)
        for source in sorted(set(sources)):
            mask = np.array([s == source for s in sources])
            scores.append(float(balanced_accuracy_score(targets[mask], predicted[mask])))
    return float(np.mean(scores))


def train(
    train_records: list[Record],
    val_records: list[Record],
    out_dir: str | Path,
    cfg: TrainConfig = TrainConfig(),
    *,
    resume: bool = False,
    overwrite: bool = False,
    taxonomy: Taxonomy | None = None,
    progress: bool = True,
    provenance: dict | None = None,
) -> TrainResult:
    out_dir = Path(out_dir)
    if has_checkpoint(out_dir / "checkpoint") and not (resume or overwrite):
        raise RunFolderError(
            f"{out_dir} holds a training run already: add --resume to continue it or --overwrite to start again"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    taxonomy = taxonomy or default_taxonomy()
    torch.manual_seed(cfg.seed)
    ddp = from_environment()  # None unless started by torchrun (see train/distributed.py)
    main_process = ddp is None or ddp.is_main  # the one that writes logs, checkpoints and the model
    progress = progress and main_process
    if not train_records or not val_records:
        raise ValueError(f"need training and validation images; got {len(train_records)} and {len(val_records)}")

    # 1. Labels -> training classes (the partition) -> integer targets.
    classes = partition(taxonomy, Counter(r.node for r in train_records), cfg.max_class_size)
    if len(classes) < 2:
        raise ValueError(
            f"--max-class-size {cfg.max_class_size:g} partitions these {len(train_records)} training images into "
            f"{len(classes)} class ({', '.join(c.node for c in classes)}); a model needs at least two: lower "
            f"--max-class-size (about {esteva_max_class_size(len(train_records)):g} keeps the paper's proportion) "
            "or add images of other diagnoses"
        )
    if cfg.precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16; got {cfg.precision!r}")
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
    if cfg.init_from:
        _load_initial_weights(model, cfg.init_from, classes)
    model = model.to(memory_format=torch.channels_last)
    if ddp is not None:
        model = ddp.prepare(model)

    # 3. Data: augmentation for training, plain preprocessing for validation; re-balanced sampling.
    first_level = [taxonomy.ancestor_at_level(c.node, 2) or c.node for c in classes]  # above the nine: its own group
    sample_weights, loss_weights = class_balance(train_targets, len(classes), cfg.balance, first_level)
    train_set = RecordDataset(train_records, build_train_transform(preprocessing, cfg.augment), train_targets)
    val_set = RecordDataset(val_covered, build_eval_transform(preprocessing), val_targets)
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    loader_args = dict(batch_size=cfg.batch_size, num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0)
    # Its own generator: starting its workers must not draw from the global RNG, or a resumed run (whose first
    # validation starts them) would draw different augmentations from then on than an uninterrupted one.
    val_loader = DataLoader(val_set, shuffle=False, generator=torch.Generator().manual_seed(cfg.seed), **loader_args)

    # 4. Optimiser and schedule; criterion.
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on norms and biases
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    criterion = torch.nn.CrossEntropyLoss(weight=loss_weights, label_smoothing=cfg.label_smoothing)
    if ddp is not None:
        criterion = criterion.to(ddp.device)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)

    # 5. Resume where a killed run left off.
    checkpoint_dir = out_dir / "checkpoint"
    state = {"epoch": 0, "best_score": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": [],
             "settings": run_settings(cfg, classes, len(train_records))}
    if ddp is not None and resume:
        ddp.same_everywhere(has_checkpoint(checkpoint_dir), f"whether {checkpoint_dir} holds a checkpoint")
    if resume and has_checkpoint(checkpoint_dir):
        settings = run_settings(cfg, classes, len(train_records))
        check_resume_settings(read_progress(checkpoint_dir).get("settings"), settings, checkpoint_dir)
        state = {**load_checkpoint(checkpoint_dir, model, optimizer), "settings": settings}
        if main_process:
            print(f"resuming after epoch {state['epoch']} from {checkpoint_dir}", file=sys.stderr)
            # A kill between logging an epoch and checkpointing it leaves that epoch in the log; it is trained again.
            rows = "".join(json.dumps(row) + "\n" for row in state["history"])
            (out_dir / "metrics.jsonl").write_text(rows)
    else:
        if resume and main_process:
            print(f"no checkpoint in {checkpoint_dir}; starting from scratch", file=sys.stderr)
        if main_process:
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
    train_model = model if ddp is None else ddp.wrap(model)  # `model` stays the plain network (saving, validation)

    # 6. The epochs.
    while state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.patience:
        epoch = state["epoch"]
        train_model.train()
        if ddp is not None:
            ddp.seed_epoch(cfg.seed, epoch)
        # A generator seeded by epoch: the same batches in a resumed run as in an uninterrupted one.
        generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        if sample_weights is not None:
            sampler = WeightedRandomSampler(sample_weights, len(train_set), replacement=True, generator=generator)
            train_loader = DataLoader(train_set, sampler=sampler, drop_last=True, **loader_args)
        else:
            train_loader = DataLoader(train_set, shuffle=True, generator=generator, drop_last=True, **loader_args)
        if ddp is not None:
            train_loader = ddp.shard(train_loader)  # the same global batches; this process takes its share
        started, seen, loss_sum = time.time(), 0, 0.0
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        for step_in_epoch, (images, targets) in enumerate(train_loader):
            if step_in_epoch >= steps_per_epoch:
                break
            step = epoch * steps_per_epoch + step_in_epoch
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total_steps, warmup_steps, cfg.lr)
            images = images.contiguous(memory_format=torch.channels_last)
            # bf16 autocast: AMX runs the step ~1.7x faster here; weights, optimizer and loss stay fp32.
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16" and ddp is None):
                if ddp is None:
                    loss = criterion(model(images).float(), targets)
                    batch_loss, batch_images = None, len(images)
                else:
                    images, targets = images.to(ddp.device, non_blocking=True), targets.to(ddp.device, non_blocking=True)
                    loss, batch_loss, batch_images = ddp.global_loss(train_model(images), targets, criterion)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += batch_images
            loss_sum += (loss.item() if batch_loss is None else batch_loss) * batch_images
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", img_s=f"{seen / (time.time() - started):.0f}")
        bar.close()
        train_seconds = time.time() - started
        if ddp is not None:
            ddp.sync_buffers(model)

        probs = predict_loader(model, val_loader, tta=cfg.val_tta).numpy()
        predicted = probs.argmax(1)
        val_bacc = selection_score(val_targets, predicted, [r.source for r in val_covered])
        val_loss = float(torch.nn.functional.nll_loss(torch.log(torch.from_numpy(probs).clamp_min(1e-8)), torch.tensor(val_targets)))
        row = {
            "epoch": epoch + 1, "train_loss": loss_sum / max(1, seen), "val_loss": val_loss,
            "val_balanced_accuracy": val_bacc, "val_accuracy": float((predicted == np.array(val_targets)).mean()),
            "lr": optimizer.param_groups[0]["lr"], "images_per_second": seen / max(train_seconds, 1e-9),
            "seconds": time.time() - started,
        }
        state["history"].append(row)
        if main_process:
            with open(log_path, "a") as log:
                log.write(json.dumps(row) + "\n")
        if val_bacc > state["best_score"]:
            state.update(best_score=val_bacc, best_epoch=epoch + 1, bad_epochs=0)
            config.training["best_epoch"] = epoch + 1
            config.training["val_balanced_accuracy_training_classes"] = val_bacc
            if main_process:
                save_model(model_dir, model, config)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        if ddp is not None:
            state = ddp.from_main(state)  # rank 0's early-stopping decision binds every rank
        if main_process:
            save_checkpoint(checkpoint_dir, model, optimizer, state)
        if progress:
            print(
                f"epoch {epoch + 1}: train loss {row['train_loss']:.3f}, val loss {val_loss:.3f}, "
                f"val balanced acc {val_bacc:.3f} ({row['images_per_second']:.0f} img/s)",
                file=sys.stderr,
            )

    # 7. The best epoch's model gets its operating point from validation data (rank 0 alone under torchrun).
    if main_process:
        from dermlens.models import load_model  # the saved best, not the last epoch

        best, config = load_model(model_dir, taxonomy)
        best = best.to(memory_format=torch.channels_last)
        probs = predict_loader(best, val_loader, tta=cfg.val_tta).numpy()
        label_nodes = [r.node for r in val_covered]
        config.operating_point = choose_operating_point(taxonomy, assignment, probs, label_nodes, cfg.target_sensitivity)
        config.operating_points = {}
        for modality in sorted({r.modality for r in val_covered} & set(MODALITIES)):
            mask = np.array([r.modality == modality for r in val_covered])
            config.operating_points[modality] = choose_operating_point(
                taxonomy, assignment, probs[mask], [n for n, m in zip(label_nodes, mask) if m], cfg.target_sensitivity
            )
        if len({r.modality for r in train_records} & set(MODALITIES)) == 2:
            fit_modality_head(best, train_records, preprocessing, model_dir, config, seed=cfg.seed,
                              num_workers=cfg.num_workers, progress=progress)
        config.training["history"] = state["history"]
        save_model(model_dir, best, config)
    if ddp is not None:
        ddp.close()  # waits for rank 0 to finish the model
    return TrainResult(model_dir, state["best_epoch"], state["best_score"], state["history"])
