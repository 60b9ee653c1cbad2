"""Runs the training recipe in one process, or in each of torchrun's processes, for tests/train/test_distributed.py.

Two things are made deterministic so that a 2-process run can be compared with a 1-process run number for number:
augmentation (random per process by design: replaced by the eval transform) and, via the architecture the test
picks (timm ``test_efficientnet_gn``: GroupNorm, no dropout), batch-dependent normalisation and dropout masks.
``--crash-at-step K`` raises in every process when step K begins, after the previous epoch's checkpoint: a kill.
"""
from __future__ import annotations

import argparse
import sys

import torch

from dermlens.data.datasets import load_records
from dermlens.data.splits import grouped_split
from dermlens.data.transforms import build_eval_transform
from dermlens.train import recipe


class SimulatedCrash(RuntimeError):
    pass


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--balance", default="sqrt")
    parser.add_argument("--crash-at-step", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    recipe.build_train_transform = lambda preprocessing, strength="paper": build_eval_transform(preprocessing)
    if args.crash_at_step is not None:
        schedule = recipe.learning_rate

        def learning_rate(step, *rest):
            if step == args.crash_at_step:
                raise SimulatedCrash(f"simulated crash at step {step}")
            return schedule(step, *rest)

        recipe.learning_rate = learning_rate

    parts = grouped_split(load_records(args.data), val_fraction=0.25, test_fraction=0.0, seed=0)
    cfg = recipe.TrainConfig(
        arch="timm:test_efficientnet_gn", pretrained=False, image_size=32, epochs=args.epochs,
        batch_size=args.batch_size, max_steps_per_epoch=args.steps, num_workers=0, max_class_size=1,
        balance=args.balance, lr=3e-3, warmup_epochs=0.5, patience=10,
    )
    recipe.train(parts["train"], parts["val"], args.out, cfg, resume=args.resume, progress=False)


if __name__ == "__main__":
    main(sys.argv[1:])
