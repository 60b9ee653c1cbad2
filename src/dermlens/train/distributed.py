"""Data-parallel training across processes: ``torchrun --nproc-per-node N -m dermlens train ...``.

The recipe stays one readable script; this module holds what changes when torchrun starts it N times:

* one process group (``gloo`` on CPU, ``nccl`` on GPUs, one GPU per process), from torchrun's environment
  (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT or a rendezvous endpoint);
* the same *global* batches as a single process with the same ``batch_size``: the recipe's own sampler
  (WeightedRandomSampler for class balance, or a seeded shuffle) is drawn identically in every process, cut into
  global batches, and each process takes its contiguous share (``batch_size / world_size`` images);
* the same loss: the class-weighted mean is taken over the global batch (the weight sum is all-reduced), so the
  averaged gradient equals the single-process one, not a mean of per-process means;
* on GPUs, BatchNorm becomes SyncBatchNorm (statistics over the global batch). PyTorch's SyncBatchNorm has no CPU
  kernel, so on CPU each process normalises over its own share, which is the usual DDP behaviour;
* only rank 0 writes the log, checkpoints and the model; every rank reads the checkpoint on ``--resume``, so the
  run folder must be on a filesystem all nodes share.

``from_environment`` returns a ``Distributed`` under torchrun and a ``SingleProcess`` otherwise: the same methods,
doing nothing (or the plain single-process thing), so the recipe reads the same either way.
"""
from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler


class ShardedBatchSampler(Sampler[list[int]]):
    """This rank's share of every global batch that ``sampler`` makes (``drop_last`` semantics, like the recipe).

    Global batch k is ``indices[k*B:(k+1)*B]`` of one pass over ``sampler``; rank r gets its slice
    ``[r*b:(r+1)*b]`` with ``b = B / world_size``. Every rank draws the full sequence from an identically seeded
    sampler, so no indices need to travel between processes.
    """

    def __init__(self, sampler, global_batch_size: int, rank: int, world_size: int):
        if global_batch_size % world_size:
            raise ValueError(f"batch size {global_batch_size} does not split evenly over {world_size} processes")
        self.sampler = sampler
        self.global_batch_size = global_batch_size
        self.share = global_batch_size // world_size
        self.rank = rank

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.global_batch_size:
                yield batch[self.rank * self.share:(self.rank + 1) * self.share]
                batch = []

    def __len__(self) -> int:
        return len(self.sampler) // self.global_batch_size


def weighted_loss_terms(logits: torch.Tensor, targets: torch.Tensor, criterion: torch.nn.CrossEntropyLoss):
    """(sum of the per-image losses, sum of their class weights): the two halves of CrossEntropyLoss's weighted mean,
    so that a mean over several processes' images can be formed from their sums."""
    if hasattr(criterion, "per_image"):  # e.g. train.tree_loss.TreeSumLoss: cross-entropy plus more per image
        per_image = criterion.per_image(logits, targets)
    else:
        per_image = torch.nn.functional.cross_entropy(
            logits, targets, weight=criterion.weight, reduction="none", label_smoothing=criterion.label_smoothing
        )
    weights = criterion.weight[targets] if criterion.weight is not None else torch.ones_like(per_image)
    return per_image.sum(), weights.sum()


class SingleProcess:
    """One process, no process group: the recipe's distributed steps become the plain ones."""

    rank, world_size, is_main, distributed = 0, 1, True, False
    device = torch.device("cpu")

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def same_everywhere(self, value: bool, what: str) -> None:
        pass

    def seed_epoch(self, seed: int, epoch: int) -> None:
        """Nothing to do: one process continues its own random stream (saved with every checkpoint)."""

    def shard(self, loader: DataLoader) -> DataLoader:
        return loader

    def to_device(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tensors

    def global_loss(self, logits: torch.Tensor, targets: torch.Tensor, criterion) -> tuple[torch.Tensor, float, int]:
        loss = criterion(logits.float(), targets)
        return loss, float(loss.detach()), len(targets)

    def sync_buffers(self, model: torch.nn.Module) -> None:
        pass

    def from_main(self, value):
        return value

    def close(self) -> None:
        pass


@dataclass
class Distributed:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False

    distributed = True

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- set-up ---------------------------------------------------------------------------------------------------

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Before the optimiser is built: SyncBatchNorm on GPUs, and the model on this process's device."""
        if self.device.type == "cuda":
            from timm.layers import convert_sync_batchnorm

            model = convert_sync_batchnorm(model)
        return model.to(self.device)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def same_everywhere(self, value: bool, what: str) -> None:
        """Fail clearly when processes disagree (e.g. a checkpoint only some nodes can see)."""
        flags = [None] * self.world_size
        dist.all_gather_object(flags, bool(value))
        if len(set(flags)) > 1:
            raise RuntimeError(f"processes disagree on {what}: {flags} (by rank); the run folder must be on a "
                               "filesystem that every node shares")

    # -- every epoch ----------------------------------------------------------------------------------------------

    def seed_epoch(self, seed: int, epoch: int) -> None:
        """Augmentation and dropout draw differently on each rank, and the same again in a resumed run."""
        value = (seed * 1000 + epoch) * 7919 + self.rank
        torch.manual_seed(value)
        random.seed(value)

    def shard(self, loader: DataLoader) -> DataLoader:
        """``loader``'s global batches, this rank's share of each (same sampler, same seed, same draws)."""
        return DataLoader(
            loader.dataset,
            batch_sampler=ShardedBatchSampler(loader.sampler, loader.batch_size, self.rank, self.world_size),
            num_workers=loader.num_workers, persistent_workers=loader.persistent_workers,
            generator=loader.generator,  # the loader draws its worker seed from it first, as the original would
            pin_memory=self.device.type == "cuda",
        )

    def to_device(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t.to(self.device, non_blocking=True) for t in tensors)

    def global_loss(self, logits: torch.Tensor, targets: torch.Tensor, criterion) -> tuple[torch.Tensor, float, int]:
        """(the loss to back-propagate, the global batch's mean loss, the global batch size).

        DDP averages gradients over ranks, so each rank's loss is its share of the global weighted sum, divided by
        the global weight sum, times ``world_size``: the average of the gradients is then the single-process one.
        """
        loss_sum, weight_sum = weighted_loss_terms(logits, targets, criterion)
        totals = torch.stack([loss_sum.detach(), weight_sum.detach(), torch.tensor(float(len(targets)), device=loss_sum.device)])
        dist.all_reduce(totals)
        loss = loss_sum / totals[1] * self.world_size
        return loss, float(totals[0] / totals[1]), int(totals[2])

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Rank 0's BatchNorm running statistics everywhere, so that every rank validates the same network."""
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)

    def from_main(self, value):
        """Rank 0's copy of a picklable value (the run's progress: early stopping must stop every rank at once)."""
        box = [value]
        dist.broadcast_object_list(box, 0)
        return box[0]

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        """Wait until rank 0 has written the final model; end the process group if this run started it."""
        dist.barrier()
        if self.owns_group:
            dist.destroy_process_group()


def from_environment() -> Distributed | SingleProcess:
    """The process group torchrun asked for (RANK and WORLD_SIZE set), or a plain single process."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return SingleProcess()
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    owns = False
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        owns = True
    return Distributed(rank=rank, world_size=world_size, local_rank=local_rank, device=device, owns_group=owns)
