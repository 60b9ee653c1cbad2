"""`--resume` continues a killed run with the same schedule: the result equals an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file

from dermlens.train import loop
from dermlens.train.checkpoint import TENSORS_FILE
from dermlens.train.recipe import TrainConfig, train

CFG = TrainConfig(image_size=32, epochs=2, batch_size=8, max_steps_per_epoch=2, num_workers=0, max_class_size=1)
TIMING_KEYS = ("seconds", "images_per_second")


class Killed(Exception):
    """Stands in for a kill at a chosen point of the epoch loop."""


def kill_at(monkeypatch, epoch: int, before_checkpoint: bool = False):
    """Make the run die right after (or right before) writing the checkpoint of ``epoch``."""
    real_save = loop.save_checkpoint

    def save(directory, model, optimizer, progress):
        if before_checkpoint and progress["epoch"] == epoch:
            raise Killed
        real_save(directory, model, optimizer, progress)
        if progress["epoch"] == epoch:
            raise Killed

    monkeypatch.setattr(loop, "save_checkpoint", save)


def model_tensors(run: Path) -> dict:
    return {k: v for k, v in load_file(str(run / "checkpoint" / TENSORS_FILE)).items() if k.startswith("model.")}


def log_rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def assert_same_run(a: Path, b: Path) -> None:
    ta, tb = model_tensors(a), model_tensors(b)
    assert ta.keys() == tb.keys()
    different = [k for k in ta if not (ta[k] == tb[k]).all()]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    assert log_rows(a) == log_rows(b)
    best_a = load_file(str(a / "model" / "model.safetensors"))
    best_b = load_file(str(b / "model" / "model.safetensors"))
    assert all((best_a[k] == best_b[k]).all() for k in best_a)


@pytest.mark.parametrize(("balance", "workers", "epochs"), [
    ("sqrt", 0, 2),  # weighted sampler
    ("none", 0, 2),  # plain shuffling
    ("sqrt", 2, 3),  # loader worker processes, as the CLI's default; epoch 3 follows a resumed validation
])
def test_resume_after_a_kill_gives_the_same_weights_as_an_uninterrupted_run(
    tmp_path, synthetic_parts, monkeypatch, balance, workers, epochs
):
    cfg = replace(CFG, balance=balance, num_workers=workers, epochs=epochs)
    train_part, val_part = synthetic_parts["train"], synthetic_parts["val"]
    straight = tmp_path / "straight"
    train(train_part, val_part, straight, cfg, progress=False)

    resumed = tmp_path / "resumed"
    with monkeypatch.context() as m:
        kill_at(m, epoch=1)
        with pytest.raises(Killed):
            train(train_part, val_part, resumed, cfg, progress=False)
    assert len(log_rows(resumed)) == 1
    result = train(train_part, val_part, resumed, cfg, resume=True, progress=False)
    assert [row["epoch"] for row in result.history] == list(range(1, epochs + 1))
    assert_same_run(straight, resumed)


def test_a_kill_between_logging_and_checkpointing_leaves_one_log_row_per_epoch(tmp_path, synthetic_parts, monkeypatch):
    train_part, val_part = synthetic_parts["train"], synthetic_parts["val"]
    straight = tmp_path / "straight"
    train(train_part, val_part, straight, CFG, progress=False)

    resumed = tmp_path / "resumed"
    with monkeypatch.context() as m:
        kill_at(m, epoch=2, before_checkpoint=True)  # epoch 2 is logged, but its checkpoint never written
        with pytest.raises(Killed):
            train(train_part, val_part, resumed, CFG, progress=False)
    assert [r["epoch"] for r in log_rows(resumed)] == [1, 2]
    train(train_part, val_part, resumed, CFG, resume=True, progress=False)  # epoch 2 is trained again
    assert [r["epoch"] for r in log_rows(resumed)] == [1, 2]
    assert_same_run(straight, resumed)


def test_resume_without_a_checkpoint_starts_from_scratch(tmp_path, synthetic_parts, capfd):
    cfg = replace(CFG, epochs=1)
    result = train(synthetic_parts["train"], synthetic_parts["val"], tmp_path, cfg, resume=True, progress=False)
    assert len(result.history) == 1
    assert "no checkpoint" in capfd.readouterr().err


def test_resume_of_a_finished_run_trains_nothing_more(tmp_path, synthetic_parts):
    cfg = replace(CFG, epochs=1)
    train(synthetic_parts["train"], synthetic_parts["val"], tmp_path, cfg, progress=False)
    before = model_tensors(tmp_path)
    result = train(synthetic_parts["train"], synthetic_parts["val"], tmp_path, cfg, resume=True, progress=False)
    assert len(result.history) == 1
    after = model_tensors(tmp_path)
    assert all((before[k] == after[k]).all() for k in before)


def dermlens_train(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "dermlens", "train", "--data", str(data), "--out", str(out), "--epochs", "2",
        "--image-size", "32", "--batch-size", "16", "--max-class-size", "1", "--workers", "0", *extra,
    ]


@pytest.mark.slow
def test_cli_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path, synthetic_labels_csv):
    """A real kill (SIGKILL, no clean-up, mid-epoch) of `dermlens train`, then `dermlens train --resume`."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    straight = tmp_path / "straight"
    subprocess.run(dermlens_train(synthetic_labels_csv, straight), check=True, capture_output=True, env=env,
                   timeout=300)

    killed = tmp_path / "killed"
    process = subprocess.Popen(dermlens_train(synthetic_labels_csv, killed), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    checkpoint = killed / "checkpoint" / TENSORS_FILE
    deadline = time.monotonic() + 240
    try:
        while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the run (and any loader workers), mid-epoch
        except ProcessLookupError:
            pass
        process.wait()
    assert checkpoint.exists(), "the run wrote no checkpoint before it was killed"
    with safe_open(str(checkpoint), framework="pt") as f:
        checkpointed_epochs = json.loads(f.metadata()["state"])["progress"]["epoch"]
    if checkpointed_epochs >= 2:
        pytest.skip("the run finished before the kill landed; nothing to resume")

    resumed = subprocess.run(dermlens_train(synthetic_labels_csv, killed, "--resume"), capture_output=True, text=True,
                             env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming after epoch" in resumed.stderr
    assert_same_run(straight, killed)


def test_a_run_folder_with_a_checkpoint_is_not_started_over_without_overwrite(tmp_path, synthetic_parts):
    cfg = replace(CFG, epochs=1)
    train(synthetic_parts["train"], synthetic_parts["val"], tmp_path, cfg, progress=False)
    before = model_tensors(tmp_path)
    with pytest.raises(ValueError, match="holds a training run already: add --resume .* or --overwrite"):
        train(synthetic_parts["train"], synthetic_parts["val"], tmp_path, cfg, progress=False)
    assert all((before[k] == model_tensors(tmp_path)[k]).all() for k in before)
    result = train(synthetic_parts["train"], synthetic_parts["val"], tmp_path, cfg, overwrite=True, progress=False)
    assert len(result.history) == 1


@pytest.mark.parametrize(("change", "named"), [
    ({"lr": 0.1}, "--lr 0.0006 -> 0.1"),
    ({"image_size": 48}, "--image-size 32 -> 48"),
    ({"batch_size": 4}, "--batch-size 8 -> 4"),
    ({"max_class_size": 2.0}, "--max-class-size 1 -> 2.0"),  # would mis-shape the head: refused before loading
])
def test_a_resume_with_other_settings_is_refused_naming_each_difference(tmp_path, synthetic_parts, change, named):
    cfg = replace(CFG, epochs=1, max_steps_per_epoch=1)
    train(synthetic_parts["train"], synthetic_parts["val"], tmp_path, cfg, progress=False)
    with pytest.raises(ValueError, match="cannot resume with other settings") as error:
        train(synthetic_parts["train"], synthetic_parts["val"], tmp_path, replace(cfg, **change), resume=True,
              progress=False)
    assert named in str(error.value)
    # Loader workers and patience change nothing that is learnt: a resume may change them.
    train(synthetic_parts["train"], synthetic_parts["val"], tmp_path, replace(cfg, patience=9), resume=True,
          progress=False)
