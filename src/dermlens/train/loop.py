"""What every trainer shares (the classifier's recipe, the lesion segmenter, the PET U-Net):

* the learning-rate schedule: linear warm-up, then cosine decay to zero; a pure function of the step, so a resumed
  run follows the same curve as an uninterrupted one;
* the run folder: ``checkpoint/`` (atomic, every epoch), ``metrics.jsonl`` (one JSON row per epoch) and ONE resume
  policy: a folder that holds a checkpoint is refused unless ``resume`` (continue it, with the same settings) or
  ``overwrite`` (start again) is asked for;
* one random-number convention: each epoch's order (and any augmentation drawn in the training loop) comes from
  ``epoch_generator(seed, epoch)``, a ``torch.Generator`` of its own; augmentations drawn inside a Dataset use
  torch's RNG, which DataLoader workers seed from that generator and the checkpoint saves for a worker-less run.
  Either way an epoch draws the same numbers whether or not the run was resumed before it;
* the progress record kept in the checkpoint: epochs done, the best epoch and its score, epochs without
  improvement (early stopping), the log rows.

A trainer reads::

    run = RunFolder(out, resume=resume, overwrite=overwrite)        # refuses a used folder before any work
    ... build model, optimizer, data ...
    state = run.start(model, optimizer, settings=asdict(cfg))       # fresh, or restored from checkpoint/
    while state.running(cfg.epochs, patience):
        row = train_one_epoch(...) | evaluate(...)
        if state.end_epoch(row, score):                             # True when this epoch is the best so far
            save the model                                          # models.saved.save_weights underneath
        run.save(model, optimizer, state)                           # the log row, then the checkpoint
"""
from __future__ import annotations

import functools
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from dermlens.train.checkpoint import TENSORS_FILE, has_checkpoint, load_checkpoint, read_progress, save_checkpoint

CHECKPOINT_DIR = "checkpoint"
LOG_FILE = "metrics.jsonl"


class RunFolderError(ValueError):
    """A run folder that holds another run: starting over without overwrite, or resuming it with other settings."""


# -- schedule and randomness -------------------------------------------------------------------------------------

class WarmupCosine:
    """The learning rate of each step: a linear warm-up to ``base_lr`` over ``warmup_steps`` steps (the first at
    ``base_lr / warmup_steps``), then a cosine down to 0 at ``total_steps``, and 0 after. The values are
    ``torch.optim.lr_scheduler``'s (``LinearLR`` then ``CosineAnnealingLR`` in a ``SequentialLR``), stepped on an
    optimiser of its own: a trainer still sets every parameter group's rate, times its ``lr_scale``, through
    :func:`set_learning_rate`, and a resumed run asks for its first step directly (the schedule steps forward to it)."""

    def __init__(self, total_steps: int, warmup_steps: int, base_lr: float):
        self.total_steps, self.warmup_steps, self.base_lr = total_steps, warmup_steps, base_lr
        self._restart()

    def _restart(self) -> None:
        from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

        self._optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=self.base_lr)
        cosine = CosineAnnealingLR(self._optimizer, T_max=max(1, self.total_steps - self.warmup_steps), eta_min=0.0)
        if self.warmup_steps > 0:
            warmup = LinearLR(self._optimizer, start_factor=1.0 / self.warmup_steps, end_factor=1.0,
                              total_iters=self.warmup_steps - 1)
            self._scheduler = SequentialLR(self._optimizer, [warmup, cosine], milestones=[self.warmup_steps])
        else:
            self._scheduler = cosine
        self._optimizer.step()  # no gradient, no change: it tells the schedulers the optimiser runs first
        self._step = 0

    def __call__(self, step: int) -> float:
        if step >= self.total_steps:
            return 0.0
        if step < self._step:
            self._restart()
        while self._step < step:
            self._scheduler.step()
            self._step += 1
        return max(0.0, float(self._optimizer.param_groups[0]["lr"]))


@functools.lru_cache(maxsize=8)
def _schedule(total_steps: int, warmup_steps: int, base_lr: float) -> WarmupCosine:
    return WarmupCosine(total_steps, warmup_steps, base_lr)


def learning_rate(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """The warm-up-then-cosine rate of ``step`` (:class:`WarmupCosine`, one kept per schedule)."""
    return _schedule(total_steps, warmup_steps, base_lr)(step)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random numbers of one epoch: its own stream, the same in a resumed run as in an uninterrupted one."""
    return torch.Generator().manual_seed(seed * 1000 + epoch)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every parameter group at ``lr`` times its own ``lr_scale`` (e.g. a pretrained encoder at a tenth)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


# -- progress ------------------------------------------------------------------------------------------------------

@dataclass
class Progress:
    """Where a run stands; saved with every checkpoint, so a resumed run picks up its best score and patience."""

    epoch: int = 0  # epochs finished
    best_score: float = -math.inf  # higher is better
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the last improvement
    history: list[dict] = field(default_factory=list)  # the log rows, one per epoch
    settings: dict | None = None  # what a resume must agree on

    def running(self, epochs: int, patience: int | None = None) -> bool:
        """More epochs to train, and (with a patience) validation has not stopped improving."""
        return self.epoch < epochs and (patience is None or self.bad_epochs < patience)

    def end_epoch(self, row: dict, score: float | None = None) -> bool:
        """Record the epoch just trained; True when its ``score`` is the best so far (its model is the one to keep).
        Without a score (no validation) every epoch counts as the best: the last one is kept."""
        self.history.append(row)
        self.epoch += 1
        if score is None or score > self.best_score:
            self.best_score = -math.inf if score is None else score
            self.best_epoch, self.bad_epochs = self.epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @classmethod
    def from_dict(cls, saved: dict) -> "Progress":
        """Also reads checkpoints of earlier versions, which kept fewer of these fields."""
        known = {k: v for k, v in saved.items() if k in cls.__dataclass_fields__}
        progress = cls(**known)
        progress.best_epoch = progress.best_epoch or 0
        return progress


# -- run folder ----------------------------------------------------------------------------------------------------

def _jsonable(value):
    """As it reads back from the checkpoint's JSON (tuples become lists), so that equal settings compare equal."""
    return json.loads(json.dumps(value))


class RunFolder:
    """A training run's folder and its one resume policy.

    ``writer=False`` for the processes of a distributed run other than rank 0: they read the checkpoint on resume
    but write nothing.
    """

    def __init__(self, path: str | Path, *, resume: bool = False, overwrite: bool = False, writer: bool = True):
        self.path = Path(path)
        self.resume, self.overwrite, self.writer = resume, overwrite, writer
        if resume and overwrite:
            raise RunFolderError(f"{self.path}: resume continues the run and overwrite starts it again; choose one")
        if has_checkpoint(self.checkpoint_dir) and not (resume or overwrite):
            raise RunFolderError(
                f"{self.path} holds a training run already: add --resume to continue it or --overwrite to start again"
            )

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def log_path(self) -> Path:
        return self.path / LOG_FILE

    def start(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, settings: dict | None = None, *,
              may_change: tuple[str, ...] = (), data: dict | None = None) -> Progress:
        """A fresh progress record, or (``resume`` and a checkpoint) the checkpoint's, with model, optimizer and
        RNG restored from it.

        ``settings`` (the trainer's config) and ``data`` (facts of the data, e.g. the training classes) must match
        the checkpoint's on resume, except the keys in ``may_change`` (those that change how fast or how long a
        run goes, not what it learns). A new run in this folder starts a new log.
        """
        settings = _jsonable({k: v for k, v in (settings or {}).items() if k not in may_change})
        current = {"options": settings, "data": _jsonable(data or {})}
        if self.resume and has_checkpoint(self.checkpoint_dir):
            saved = read_progress(self.checkpoint_dir).get("settings")
            self._check_same_settings(saved, current)  # before loading: other settings may not even fit the model
            progress = Progress.from_dict(load_checkpoint(self.checkpoint_dir, model, optimizer))
            progress.settings = current
            if self.writer:
                print(f"resuming after epoch {progress.epoch} from {self.checkpoint_dir}", file=sys.stderr)
                # A kill between logging an epoch and checkpointing it leaves that epoch in the log; it is trained
                # again, so the log is rewritten from the checkpoint's rows.
                self.log_path.write_text("".join(json.dumps(row) + "\n" for row in progress.history))
            return progress
        if self.writer:
            if self.resume:
                print(f"no checkpoint in {self.checkpoint_dir}; starting from scratch", file=sys.stderr)
            self.path.mkdir(parents=True, exist_ok=True)
            self.log_path.unlink(missing_ok=True)
            # Overwrite: the old checkpoint goes now, so a kill before the first new one cannot resume the old run.
            (self.checkpoint_dir / TENSORS_FILE).unlink(missing_ok=True)
        return Progress(settings=current)

    def _check_same_settings(self, saved: dict | None, current: dict) -> None:
        if saved is None:  # checkpoints from before settings were stored
            return
        if "options" not in saved:  # the classifier's earlier layout: options and data facts in one dict
            saved = {"options": {k: v for k, v in saved.items() if k not in current["data"]},
                     "data": {k: v for k, v in saved.items() if k in current["data"]}}
        differences = []
        for part in ("options", "data"):
            old, new = saved.get(part, {}), current[part]
            for key in sorted(set(old) | set(new)):
                a, b = old.get(key), new.get(key)
                if a == b:
                    continue
                if part == "options":
                    differences.append(f"--{key.replace('_', '-')} {a!r} -> {b!r}")
                else:  # lists (e.g. the training classes) by their length
                    differences.append(f"{key} {len(a) if isinstance(a, list) else a} -> "
                                       f"{len(b) if isinstance(b, list) else b}")
        if differences:
            raise RunFolderError(
                f"{self.checkpoint_dir}: cannot resume with other settings than the run was started with: "
                + "; ".join(differences) + ". Use the original settings, or --overwrite to start again."
            )

    def save(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, progress: Progress) -> None:
        """The epoch's log row, then its checkpoint (atomic: a kill leaves the previous one whole)."""
        if not self.writer:
            return
        with open(self.log_path, "a") as log:
            log.write(json.dumps(progress.history[-1]) + "\n")
        save_checkpoint(self.checkpoint_dir, model, optimizer, asdict(progress))
