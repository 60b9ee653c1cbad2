"""Training the small U-Net on simulated PET images: with the soft-label cross-entropy on the true tumour
fractions (``method="fraction"``, the estimator of Liu, Jha et al. 2021), or with the ordinary cross-entropy on
the fractions binarised at 0.5 (``method="binary"``, the binary U-Net baseline; same network, same schedule).

A run folder holds the model (``model.safetensors`` + ``config.json``, written when the last epoch is done: the
schedule has a fixed length, and a model file means a finished run), ``checkpoint/`` (model, optimizer and RNG after
every epoch) and ``metrics.jsonl`` (one line per epoch). The run folder and its resume policy are the classifier's
(train/loop.py): a used folder needs ``resume`` (continue, same settings) or ``overwrite`` (start again).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dermlens.segment.losses import LOSSES, soft_cross_entropy
from dermlens.models.segmentation import create_network
from dermlens.pet.dataset import load_dataset
from dermlens.models.saved import CONFIG_FILE, WEIGHTS_FILE, load_weights, save_weights
from dermlens.train.loop import RunFolder, epoch_generator, learning_rate, set_learning_rate

MODEL_FILE = WEIGHTS_FILE
# Settings a resumed run may change: they do not alter what is learnt.
RESUMABLE_CHANGES = ("threads",)
NETWORK = "small_unet"


@dataclass
class PETTrainConfig:
    method: str = "fraction"  # "fraction" (soft-label cross-entropy) or "binary" (targets binarised at 0.5)
    epochs: int = 12
    batch_size: int = 32
    lr: float = 2e-3  # peak learning rate (AdamW; linear warm-up over the first epoch's first 10%, then cosine)
    weight_decay: float = 1e-4
    base_channels: int = 16
    depth: int = 3
    val_fraction: float = 0.1  # the dataset's last images, held out for the per-epoch validation loss
    augment: bool = True  # random 90-degree rotations and flips (the physics is isotropic)
    seed: int = 0
    max_steps_per_epoch: int | None = None  # for quick tests
    threads: int = 1  # torch CPU threads (the machine is shared)

    def __post_init__(self):
        if self.method not in LOSSES:
            raise ValueError(f"unknown training method {self.method!r}; choose from {sorted(LOSSES)}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")

    @classmethod
    def from_dict(cls, values: dict) -> "PETTrainConfig":
        return cls(**{k: v for k, v in values.items() if k in {f.name for f in fields(cls)}})


def normalise(images: np.ndarray) -> np.ndarray:
    """Network input: each image divided by its own mean, so that dose and calibration do not matter."""
    images = np.asarray(images, dtype=np.float32)
    means = images.reshape(len(images), -1).mean(axis=1)
    return images / np.maximum(means, 1e-6)[:, None, None]


def _augment(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    k = int(torch.randint(4, (), generator=generator))
    x, y = torch.rot90(x, k, dims=(-2, -1)), torch.rot90(y, k, dims=(-2, -1))
    if float(torch.rand((), generator=generator)) < 0.5:
        x, y = torch.flip(x, dims=(-1,)), torch.flip(y, dims=(-1,))
    return x, y


@torch.no_grad()
def _validation(model, images: np.ndarray, fractions: np.ndarray, method: str, batch_size: int = 128) -> dict:
    model.eval()
    totals = {"soft_ce": 0.0, "method_loss": 0.0}
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start:start + batch_size, None])
        y = torch.from_numpy(fractions[start:start + batch_size, None])
        logits = model(x)
        totals["soft_ce"] += float(soft_cross_entropy(logits, y)) * len(x)
        totals["method_loss"] += float(LOSSES[method](logits, y)) * len(x)
    model.train()
    return {k: v / max(1, len(images)) for k, v in totals.items()}


def train_one_epoch(model, loss_fn, optimizer, train_x: np.ndarray, train_y: np.ndarray, lr_at, epoch: int,
                    steps_per_epoch: int, cfg: PETTrainConfig, progress: bool = True) -> dict:
    model.train()
    generator = epoch_generator(cfg.seed, epoch)  # the epoch's order and augmentations, resume or not
    order = torch.randperm(len(train_x), generator=generator).numpy()
    running = 0.0
    bar = tqdm(range(steps_per_epoch), desc=f"{cfg.method} epoch {epoch + 1}/{cfg.epochs}", unit="batch",
               disable=not progress, leave=False)
    for step in bar:
        index = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        x, y = torch.from_numpy(train_x[index, None]), torch.from_numpy(train_y[index, None])
        if cfg.augment:
            x, y = _augment(x, y, generator)
        set_learning_rate(optimizer, lr_at(epoch * steps_per_epoch + step))
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running += loss.item()
        bar.set_postfix(loss=f"{running / (step + 1):.4f}")
    return {"train_loss": running / steps_per_epoch}


def train_pet(data_dir: str | Path, out_dir: str | Path, cfg: PETTrainConfig | None = None, resume: bool = False,
              progress: bool = True, *, overwrite: bool = False) -> Path:
    """Train on a simulated dataset; returns the run folder (which is also the model folder)."""
    cfg = cfg or PETTrainConfig()
    out_dir = Path(out_dir)
    run = RunFolder(out_dir, resume=resume, overwrite=overwrite)
    data = load_dataset(data_dir)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    images, fractions = normalise(data.images), data.fractions.astype(np.float32)
    n_val = int(round(len(images) * cfg.val_fraction))
    n_train = len(images) - n_val
    if n_train < 1:
        raise ValueError(f"{data_dir}: {len(images)} images leave none for training")
    train_x, train_y = images[:n_train], fractions[:n_train]
    val_x, val_y = images[n_train:], fractions[n_train:]

    model = create_network(NETWORK, in_channels=1, base_channels=cfg.base_channels, depth=cfg.depth)
    # Start the output at the prior tumour fraction (Lin et al. 2017's prior initialisation): tumour is well under
    # 1% of the pixels, and from a bias of 0 (p = 0.5) the first few hundred steps would only learn that.
    prior = float((train_y >= 0.5).mean() if cfg.method == "binary" else train_y.mean())
    with torch.no_grad():
        model.head.bias.fill_(math.log(max(prior, 1e-4) / (1.0 - min(prior, 0.5))))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total_steps, warmup_steps = steps_per_epoch * cfg.epochs, max(1, steps_per_epoch // 10)

    def lr_at(step: int) -> float:
        return learning_rate(step, total_steps, warmup_steps, cfg.lr)

    state = run.start(model, optimizer, asdict(cfg), may_change=RESUMABLE_CHANGES,
                      data={"n_train": n_train})
    loss_fn = LOSSES[cfg.method]
    while state.running(cfg.epochs):
        epoch, started = state.epoch, time.perf_counter()
        row = {"epoch": epoch + 1, **train_one_epoch(model, loss_fn, optimizer, train_x, train_y, lr_at, epoch,
                                                      steps_per_epoch, cfg, progress)}
        row["seconds"] = round(time.perf_counter() - started, 1)
        if len(val_x):
            row.update({f"val_{k}": v for k, v in _validation(model, val_x, val_y, cfg.method).items()})
        if progress:
            tqdm.write(f"{cfg.method} epoch {epoch + 1}/{cfg.epochs}: " +
                       ", ".join(f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float)))
        state.end_epoch(row)  # no selection: the schedule runs its length and the last epoch is the model
        run.save(model, optimizer, state)
    save_pet_model(out_dir, model, cfg, {"data": str(data_dir), "n_train": n_train, "n_val": n_val,
                                         "simulator": data.config.to_dict(), "history": state.history})
    return out_dir


def save_pet_model(directory: Path, model: torch.nn.Module, cfg: PETTrainConfig, extra: dict) -> None:
    config = {"network": NETWORK, "network_kwargs": {"in_channels": 1, "base_channels": cfg.base_channels,
                                                     "depth": cfg.depth},
              "method": cfg.method, "input": "image divided by its mean", "train": asdict(cfg), **extra}
    save_weights(directory, model.state_dict(), config)


def load_pet_model(directory: str | Path) -> tuple[torch.nn.Module, dict]:
    """(network in eval mode, its config.json) from a folder written by ``train_pet``."""
    directory = Path(directory)
    if not (directory / MODEL_FILE).is_file() or not (directory / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{directory}: no trained PET model ({MODEL_FILE} + {CONFIG_FILE}); train one with "
                                "`dermlens pet train`")
    state_dict, config = load_weights(directory)
    if config.get("network") != NETWORK:
        raise ValueError(f"{directory}: network {config.get('network')!r} is not a PET model ({NETWORK})")
    model = create_network(NETWORK, **config["network_kwargs"])
    model.load_state_dict(state_dict)
    return model.eval(), config


@torch.no_grad()
def predict_fractions(model: torch.nn.Module, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Per-pixel sigmoid outputs (N, H, W) for raw simulated images (normalised here)."""
    x = normalise(images)
    out = [torch.sigmoid(model(torch.from_numpy(x[s:s + batch_size, None])))[:, 0].numpy()
           for s in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros_like(x)
