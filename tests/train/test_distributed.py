"""Distributed training (torchrun, DDP over gloo on CPU): two processes train the same network as one process with
the same global batch, only rank 0 writes, and a killed run resumes to the same result.

Tolerance: losses agree within 1e-4 (relative) and weights within 1e-4. The two runs differ only in the order of
floating-point sums (each process sums its half of the batch, then the halves are added); measured differences
are about 1e-5 for losses and 1e-6 for weights. A wrong split of the batch (e.g. a per-process mean of the
class-weighted loss, or each process drawing its own sample) moves the losses by far more (checked below).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, WeightedRandomSampler

from dermlens.data.synthetic import make_synthetic_dataset
from dermlens.train.distributed import Distributed, ShardedBatchSampler, weighted_loss_terms

RUNNER = Path(__file__).with_name("ddp_runner.py")
TOLERANCE = 1e-4


# ---------------------------------------------------------------------------------------------------------------
# Pieces, without processes
# ---------------------------------------------------------------------------------------------------------------


def _index_batches(loader) -> list[list[int]]:
    return [batch.tolist() for batch in loader]


@pytest.mark.parametrize("kind", ["weighted", "shuffle"])
@pytest.mark.parametrize("world_size", [2, 4])
def test_shards_of_each_step_make_up_the_single_process_batch(kind, world_size):
    data = list(range(103))
    weights = torch.linspace(0.1, 3.0, len(data), dtype=torch.double)

    def recipe_loader():  # exactly how recipe.train builds its loader for one epoch
        generator = torch.Generator().manual_seed(7)
        if kind == "weighted":
            sampler = WeightedRandomSampler(weights, len(data), replacement=True, generator=generator)
            return DataLoader(data, sampler=sampler, batch_size=8, drop_last=True)
        return DataLoader(data, shuffle=True, generator=generator, batch_size=8, drop_last=True)

    single = _index_batches(recipe_loader())
    shards = [
        _index_batches(Distributed(rank, world_size, rank, torch.device("cpu")).shard(recipe_loader()))
        for rank in range(world_size)
    ]
    assert all(len(s) == len(single) == 103 // 8 for s in shards)
    for step, batch in enumerate(single):
        assert sum((s[step] for s in shards), []) == batch


def test_a_batch_size_that_does_not_split_evenly_is_refused():
    with pytest.raises(ValueError, match="does not split evenly"):
        ShardedBatchSampler(range(10), 6, rank=0, world_size=4)


def test_weighted_loss_assembled_from_shards_equals_the_whole_batch_loss():
    torch.manual_seed(0)
    logits, targets = torch.randn(12, 5), torch.randint(0, 5, (12,))
    criterion = torch.nn.CrossEntropyLoss(weight=torch.tensor([0.3, 1.0, 2.5, 0.7, 1.9]), label_smoothing=0.1)
    whole = criterion(logits, targets)
    (s1, w1), (s2, w2) = weighted_loss_terms(logits[:5], targets[:5], criterion), weighted_loss_terms(logits[5:], targets[5:], criterion)
    assert torch.allclose((s1 + s2) / (w1 + w2), whole, atol=1e-6)
    mean_of_means = (criterion(logits[:5], targets[:5]) + criterion(logits[5:], targets[5:])) / 2
    assert abs(float(mean_of_means - whole)) > 1e-3  # what naive DDP would optimise instead


# ---------------------------------------------------------------------------------------------------------------
# Real processes: torchrun with 2 CPU processes (gloo)
# ---------------------------------------------------------------------------------------------------------------


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(args: list[str], processes: int | None, check: bool = True) -> subprocess.CompletedProcess:
    launcher = [sys.executable] if processes is None else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    done = subprocess.run(launcher + args, env=_env(), capture_output=True, text=True, timeout=600)
    if check and done.returncode != 0:
        raise AssertionError(f"{args} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model" / "model.safetensors"))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("ddp-data"), n_per_class=8, size=32, seed=1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_data) -> dict[str, Path]:
    """One single-process and one 2-process run of the same recipe (global batch 8, 3 steps x 2 epochs)."""
    root = tmp_path_factory.mktemp("ddp-runs")
    common = [str(RUNNER), "--data", str(tiny_data), "--epochs", "2", "--batch-size", "8", "--steps", "3"]
    _run(common + ["--out", str(root / "single")], processes=None)
    _run(common + ["--out", str(root / "two")], processes=2)
    return {"single": root / "single", "two": root / "two", "common": common, "root": root}


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(runs):
    single, two = _log(runs["single"]), _log(runs["two"])
    assert len(single) == len(two) == 2  # one row per epoch: rank 1 wrote nothing
    for a, b in zip(single, two):
        for key in ("train_loss", "val_loss"):
            assert b[key] == pytest.approx(a[key], rel=TOLERANCE), (key, a[key], b[key])
        assert b["lr"] == a["lr"]
    assert single[1]["train_loss"] < single[0]["train_loss"] - 100 * TOLERANCE  # it trained: the check has teeth
    w1, w2 = _weights(runs["single"]), _weights(runs["two"])
    assert w1.keys() == w2.keys()
    assert max(float((w1[k].float() - w2[k].float()).abs().max()) for k in w1) < TOLERANCE


@pytest.mark.slow
def test_only_rank_zero_writes(runs):
    files = sorted(p.relative_to(runs["two"]).as_posix() for p in runs["two"].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(runs["single"]).as_posix() for p in runs["single"].rglob("*") if p.is_file())
    assert not any(".tmp" in f for f in files)


@pytest.mark.slow
def test_a_killed_distributed_run_resumes_to_the_uninterrupted_result(runs):
    out = runs["root"] / "killed"
    crashed = _run(runs["common"] + ["--out", str(out), "--crash-at-step", "3"], processes=2, check=False)
    assert crashed.returncode != 0 and "simulated crash at step 3" in crashed.stderr
    assert len(_log(out)) == 1  # epoch 1 finished and was checkpointed before the kill
    resumed = _run(runs["common"] + ["--out", str(out), "--resume"], processes=2)
    assert "resuming after epoch 1" in resumed.stderr
    assert resumed.stderr.count("resuming after epoch 1") == 1  # said by rank 0 only
    uninterrupted, after = _log(runs["two"]), _log(out)
    assert [r["train_loss"] for r in after] == [r["train_loss"] for r in uninterrupted]
    assert [r["val_loss"] for r in after] == [r["val_loss"] for r in uninterrupted]
    w1, w2 = _weights(runs["two"]), _weights(out)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


@pytest.mark.slow
def test_torchrun_runs_the_dermlens_train_command(tiny_data, tmp_path):
    out = tmp_path / "cli-run"
    args = ["-m", "dermlens", "train", "--data", str(tiny_data), "--out", str(out), "--epochs", "1",
            "--batch-size", "8", "--image-size", "32", "--workers", "0", "--max-class-size", "1"]
    done = _run(args, processes=2)
    assert "best epoch 1" in done.stdout
    assert len(_log(out)) == 1
    assert (out / "model" / "config.json").is_file() and (out / "checkpoint").is_dir()
