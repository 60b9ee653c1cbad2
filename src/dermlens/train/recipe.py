"""The training recipe, readable top to bottom (in the manner of torchvision's reference scripts):
``train_one_epoch``, ``evaluate`` (validation), then ``train``, which builds everything and runs the epochs.

    labels ──► taxonomy nodes ──► partition into training classes ──► targets
    ImageNet backbone, new head (one output per class), all layers fine-tuned
    AdamW, linear warm-up then cosine decay (train/loop.py: a pure function of the step, so a resumed run follows
    the same curve)
    class imbalance: sampled down the taxonomy by square roots, first-level groups then classes within them
    (balance="tree", the default; "sqrt" is square-root re-balancing, half by sampling and half by loss weights;
    train/balance.py)
    optionally (--tree-loss-weight) also the NLL of the true 3- and 9-way nodes from the tree sum (train/tree_loss.py)
    every epoch: validate, checkpoint, log; keep the best model (balanced accuracy over training classes, averaged
    over the validation sources so that each dataset counts alike); stop early when validation stops improving
    at the end: choose the referral threshold on validation data for a target sensitivity, overall and per
    modality (dermoscopic, clinical), and fit the modality recogniser on the embedding

The run folder (checkpoint/, metrics.jsonl, the resume policy) is train/loop.py's, shared with the segmenter and
the PET trainers; what changes under torchrun is train/distributed.py's.
"""
from __future__ import annotations

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
from dermlens.evaluate.operating_point import choose_operating_points
from dermlens.models import ModelConfig, create_backbone, load_model, read_config, save_model
from dermlens.models.inference import predict_loader
from dermlens.models.modality import MODALITIES, fit_modality_head
from dermlens.models.saved import load_weights
from dermlens.taxonomy import ClassAssignment, Taxonomy, default_taxonomy, partition
from dermlens.taxonomy.partition import esteva_max_class_size
from dermlens.train.balance import class_balance
from dermlens.train.checkpoint import has_checkpoint
from dermlens.train.distributed import from_environment
from dermlens.train.loop import RunFolder, RunFolderError, epoch_generator, learning_rate, set_learning_rate
from dermlens.train.tree_loss import TreeSumLoss

__all__ = ["TrainConfig", "TrainResult", "train", "train_one_epoch", "evaluate", "class_balance", "learning_rate",
           "selection_score", "RunFolderError", "choose_operating_points"]


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
    tree_loss_weight: float = 0.0  # > 0: also the NLL of the true 3- and 9-way nodes (train/tree_loss.py)
    balance: str = "tree"  # none | sqrt | tree | loss | sampler; tree: the bundled model's recipe (README)
    augment: str = "paper"  # paper | light | robust | camera
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


# Settings a resumed run may change: they do not alter what is learnt, only how fast or how long it waits.
RESUMABLE_CHANGES = ("num_workers", "patience")
# Settings added after runs were checkpointed, with the value that means "as before": left out of the resume check
# at that value, so a checkpoint written before the setting existed still resumes.
ADDED_SETTINGS = {"tree_loss_weight": 0.0}


# ---------------------------------------------------------------------------------------------------------------
# One epoch of training, one validation
# ---------------------------------------------------------------------------------------------------------------

def train_one_epoch(model, criterion, optimizer, loader, lr_at, epoch: int, steps_per_epoch: int, cfg: TrainConfig,
                    world, progress: bool = True) -> dict:
    """At most ``steps_per_epoch`` batches of ``loader``, the learning rate of each step from ``lr_at(step)``;
    returns the epoch's training figures for the log."""
    model.train()
    started, seen, loss_sum = time.time(), 0, 0.0
    bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
    for step_in_epoch, (images, targets) in enumerate(loader):
        if step_in_epoch >= steps_per_epoch:
            break
        set_learning_rate(optimizer, lr_at(epoch * steps_per_epoch + step_in_epoch))
        images, targets = world.to_device(images.contiguous(memory_format=torch.channels_last), targets)
        # bf16 autocast: weights, optimizer and loss stay fp32. Faster only where the CPU's bf16 units win (an early
        # probe saw 1.7x; this machine measured slower, docs/training.md), so fp32 is the default.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16" and not world.distributed):
            # Under torchrun: this process's share of the global batch's weighted loss (train/distributed.py).
            loss, batch_loss, batch_images = world.global_loss(model(images), targets, criterion)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += batch_images
        loss_sum += batch_loss * batch_images
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", img_s=f"{seen / (time.time() - started):.0f}")
    bar.close()
    return {"train_loss": loss_sum / max(1, seen), "lr": optimizer.param_groups[0]["lr"],
            "images_per_second": seen / max(time.time() - started, 1e-9)}


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


def evaluate(model, loader, targets: list[int], sources: list[str], tta: int = 1) -> dict:
    """Validation figures for the log; ``val_balanced_accuracy`` is the one the best epoch is chosen by."""
    probs = predict_loader(model, loader, tta=tta).numpy()
    predicted = probs.argmax(1)
    log_probs = torch.log(torch.from_numpy(probs).clamp_min(1e-8))
    return {
        "val_loss": float(torch.nn.functional.nll_loss(log_probs, torch.tensor(targets))),
        "val_balanced_accuracy": selection_score(targets, predicted, sources),
        "val_accuracy": float((predicted == np.array(targets)).mean()),
    }


# ---------------------------------------------------------------------------------------------------------------
# The pieces train() assembles
# ---------------------------------------------------------------------------------------------------------------

def training_classes(train_records: list[Record], taxonomy: Taxonomy, max_class_size: float):
    """The partition of the taxonomy that these training images support (at least two classes)."""
    classes = partition(taxonomy, Counter(r.node for r in train_records), max_class_size)
    if len(classes) < 2:
        raise ValueError(
            f"--max-class-size {max_class_size:g} partitions these {len(train_records)} training images into "
            f"{len(classes)} class ({', '.join(c.node for c in classes)}); a model needs at least two: lower "
            f"--max-class-size (about {esteva_max_class_size(len(train_records)):g} keeps the paper's proportion) "
            "or add images of other diagnoses"
        )
    return classes


def _covered(assignment: ClassAssignment, node: str) -> bool:
    """Validation images whose disease no training class covers cannot be scored against the training classes."""
    try:
        assignment.class_index(node)
        return True
    except ValueError:
        return False


def _load_initial_weights(model: torch.nn.Module, model_dir: str, classes) -> None:
    """Start from a trained dermlens model; its training classes must be the ones this data partitions into."""
    previous = read_config(model_dir)
    if previous.class_nodes != [c.node for c in classes]:
        raise ValueError(
            f"{model_dir}: its training classes {previous.class_nodes} differ from this run's "
            f"{[c.node for c in classes]}; use the same data and --max-class-size"
        )
    model.load_state_dict(load_weights(model_dir)[0])


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on norms and biases
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )


def _epoch_loader(train_set, sample_weights, cfg: TrainConfig, epoch: int, loader_args: dict) -> DataLoader:
    generator = epoch_generator(cfg.seed, epoch)  # the same batches in a resumed run as in an uninterrupted one
    if sample_weights is not None:
        sampler = WeightedRandomSampler(sample_weights, len(train_set), replacement=True, generator=generator)
        return DataLoader(train_set, sampler=sampler, drop_last=True, **loader_args)
    return DataLoader(train_set, shuffle=True, generator=generator, drop_last=True, **loader_args)


def _calibrate(best, config: ModelConfig, val_loader, val_records, assignment, taxonomy, cfg: TrainConfig) -> None:
    """The referral threshold on P(malignant), chosen on validation data: pooled, and per modality."""
    probs = predict_loader(best, val_loader, tta=cfg.val_tta).numpy()
    config.operating_points = {}
    choose_operating_points(taxonomy, assignment, probs, [r.node for r in val_records],
                            [r.modality for r in val_records], cfg.target_sensitivity).apply(config)


# ---------------------------------------------------------------------------------------------------------------
# The recipe
# ---------------------------------------------------------------------------------------------------------------

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
    taxonomy = taxonomy or default_taxonomy()
    torch.manual_seed(cfg.seed)
    world = from_environment()  # one process, or one of torchrun's (see train/distributed.py)
    if len(train_records) < cfg.batch_size:  # before the run folder is touched
        # every epoch drops its last partial batch (drop_last in _epoch_loader), so not one step would run, and
        # the untrained network would be saved as if trained
        raise ValueError(f"{len(train_records)} training images are fewer than one batch of {cfg.batch_size}: no "
                         f"training step would run; lower --batch-size (at most {len(train_records)}) or add images")
    run = RunFolder(out_dir, resume=resume, overwrite=overwrite, writer=world.is_main)  # only rank 0 writes
    progress = progress and world.is_main
    if not train_records or not val_records:
        raise ValueError(f"need training and validation images; got {len(train_records)} and {len(val_records)}")
    if cfg.precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16; got {cfg.precision!r}")

    # 1. Labels -> training classes (the partition) -> integer targets.
    classes = training_classes(train_records, taxonomy, cfg.max_class_size)
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
    model = world.prepare(model.to(memory_format=torch.channels_last))

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
    optimizer = _optimizer(model, cfg)
    if cfg.tree_loss_weight:
        criterion = TreeSumLoss(taxonomy, classes, cfg.tree_loss_weight, loss_weights, cfg.label_smoothing)
    else:
        criterion = torch.nn.CrossEntropyLoss(weight=loss_weights, label_smoothing=cfg.label_smoothing)
    criterion = criterion.to(world.device)
    total_steps, warmup_steps = steps_per_epoch * cfg.epochs, int(cfg.warmup_epochs * steps_per_epoch)

    def lr_at(step: int) -> float:
        return learning_rate(step, total_steps, warmup_steps, cfg.lr)

    # 5. Resume where a killed run left off (the policy and the checks are train/loop.py's).
    if resume:
        world.same_everywhere(has_checkpoint(run.checkpoint_dir), f"whether {run.checkpoint_dir} holds a checkpoint")
    settings = {k: v for k, v in asdict(cfg).items() if not (k in ADDED_SETTINGS and v == ADDED_SETTINGS[k])}
    state = run.start(model, optimizer, settings, may_change=RESUMABLE_CHANGES,
                      data={"classes": [c.node for c in classes], "n_train": len(train_records)})
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
    train_model = world.wrap(model)  # `model` stays the plain network (saving, validation)

    # 6. The epochs.
    while state.running(cfg.epochs, cfg.patience):
        epoch, started = state.epoch, time.time()
        world.seed_epoch(cfg.seed, epoch)
        train_loader = world.shard(_epoch_loader(train_set, sample_weights, cfg, epoch, loader_args))
        row = {"epoch": epoch + 1, **train_one_epoch(train_model, criterion, optimizer, train_loader, lr_at, epoch,
                                                      steps_per_epoch, cfg, world, progress)}
        world.sync_buffers(model)  # every rank validates rank 0's network
        row.update(evaluate(model, val_loader, val_targets, [r.source for r in val_covered], cfg.val_tta))
        row["seconds"] = time.time() - started
        if state.end_epoch(row, score=row["val_balanced_accuracy"]) and world.is_main:
            config.training.update(best_epoch=epoch + 1,
                                   val_balanced_accuracy_training_classes=row["val_balanced_accuracy"])
            save_model(model_dir, model, config)
        state = world.from_main(state)  # rank 0's early-stopping decision binds every rank
        run.save(model, optimizer, state)
        if progress:
            print(
                f"epoch {epoch + 1}: train loss {row['train_loss']:.3f}, val loss {row['val_loss']:.3f}, "
                f"val balanced acc {row['val_balanced_accuracy']:.3f} ({row['images_per_second']:.0f} img/s)",
                file=sys.stderr,
            )

    # 7. The best epoch's model gets its operating point from validation data (rank 0 alone under torchrun).
    if world.is_main:
        best, config = load_model(model_dir, taxonomy)  # the saved best, not the last epoch
        best = best.to(memory_format=torch.channels_last)
        _calibrate(best, config, val_loader, val_covered, assignment, taxonomy, cfg)
        if len({r.modality for r in train_records} & set(MODALITIES)) == 2:
            fit_modality_head(best, train_records, preprocessing, model_dir, config, seed=cfg.seed,
                              num_workers=cfg.num_workers, progress=progress)
        config.training["history"] = state.history
        save_model(model_dir, best, config)
    world.close()  # waits for rank 0 to finish the model
    return TrainResult(model_dir, state.best_epoch, state.best_score, state.history)
