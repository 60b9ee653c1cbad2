"""The pieces every trainer shares (train/loop.py): the one resume policy of a run folder, its log and checkpoint,
the progress record (best epoch, early stopping) and the per-group learning rate. The trainers' own tests check
that each of them follows the policy (tests/train/test_resume.py, tests/fraction/test_segmenter.py,
tests/fraction/test_pet_training.py)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from dermlens.train.checkpoint import has_checkpoint, save_checkpoint
from dermlens.train.loop import LOG_FILE, Progress, RunFolder, RunFolderError, set_learning_rate

SETTINGS = {"lr": 0.1, "epochs": 3, "input_size": (64, 48), "num_workers": 2}


def network_and_optimizer(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 2)
    return model, torch.optim.AdamW(model.parameters(), lr=0.1)


def train_epochs(run: RunFolder, model, optimizer, progress: Progress, epochs: int) -> Progress:
    """Stand-in for a trainer's epochs: one optimiser step each, a log row, a checkpoint."""
    while progress.running(epochs):
        model(torch.randn(8, 4)).pow(2).mean().backward()
        optimizer.step()
        progress.end_epoch({"epoch": progress.epoch + 1, "loss": 1.0 / (progress.epoch + 1)}, score=progress.epoch)
        run.save(model, optimizer, progress)
    return progress


def log_epochs(run: RunFolder) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run.path / LOG_FILE).read_text().splitlines()]


@pytest.fixture
def used_folder(tmp_path):
    """A run folder after two epochs of a run."""
    run = RunFolder(tmp_path / "run")
    model, optimizer = network_and_optimizer()
    train_epochs(run, model, optimizer, run.start(model, optimizer, SETTINGS), epochs=2)
    return run.path, model


def test_a_used_folder_is_refused_naming_it_and_both_ways_on(used_folder):
    path, _ = used_folder
    with pytest.raises(RunFolderError) as error:
        RunFolder(path)
    message = str(error.value)
    assert str(path) in message and "--resume" in message and "--overwrite" in message
    assert "\n" not in message
    with pytest.raises(RunFolderError, match="choose one"):
        RunFolder(path, resume=True, overwrite=True)


def test_an_empty_or_unfinished_folder_is_not_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOG_FILE).write_text('{"epoch": 1}\n')  # killed before the first checkpoint
    run = RunFolder(tmp_path / "run")
    model, optimizer = network_and_optimizer()
    assert run.start(model, optimizer, SETTINGS).epoch == 0
    assert not (tmp_path / "run" / LOG_FILE).exists()  # a new run starts a new log


def test_resume_continues_after_the_last_checkpointed_epoch(used_folder, capfd):
    path, trained = used_folder
    # A kill after the third epoch's log row but before its checkpoint: that epoch is trained again.
    with open(path / LOG_FILE, "a") as log:
        log.write(json.dumps({"epoch": 3, "loss": 0.3}) + "\n")
    run = RunFolder(path, resume=True)
    model, optimizer = network_and_optimizer(seed=1)  # different starting weights: the checkpoint must replace them
    progress = run.start(model, optimizer, SETTINGS)
    assert "resuming after epoch 2" in capfd.readouterr().err
    assert progress.epoch == 2 and progress.best_epoch == 2 and [r["epoch"] for r in progress.history] == [1, 2]
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), trained.parameters()))
    assert optimizer.state_dict()["state"][0]["step"] == 2  # AdamW's moments and step count came back too
    assert log_epochs(run) == [1, 2]
    train_epochs(run, model, optimizer, progress, epochs=3)
    assert log_epochs(run) == [1, 2, 3]


def test_resume_without_a_checkpoint_starts_from_scratch(tmp_path, capfd):
    run = RunFolder(tmp_path, resume=True)
    model, optimizer = network_and_optimizer()
    assert run.start(model, optimizer, SETTINGS).epoch == 0
    assert "no checkpoint" in capfd.readouterr().err


def test_overwrite_starts_again_and_drops_the_old_checkpoint_at_once(used_folder):
    path, _ = used_folder
    run = RunFolder(path, overwrite=True)
    model, optimizer = network_and_optimizer()
    progress = run.start(model, optimizer, {**SETTINGS, "lr": 0.5})  # other settings are fine: a new run
    assert progress.epoch == 0 and progress.history == []
    assert not (path / LOG_FILE).exists()
    # Killed now, before its first checkpoint: a later resume must not continue the old run under the new log.
    assert not has_checkpoint(run.checkpoint_dir)
    train_epochs(run, model, optimizer, progress, epochs=1)
    assert log_epochs(run) == [1]


def test_a_resume_with_other_settings_is_refused_naming_each_difference(tmp_path):
    run = RunFolder(tmp_path)
    model, optimizer = network_and_optimizer()
    progress = run.start(model, optimizer, SETTINGS, may_change=("num_workers",), data={"classes": ["a", "b"]})
    train_epochs(run, model, optimizer, progress, epochs=1)
    again = RunFolder(tmp_path, resume=True)
    with pytest.raises(RunFolderError, match="cannot resume with other settings") as error:
        again.start(model, optimizer, {**SETTINGS, "lr": 0.2, "max_steps_per_epoch": 5}, may_change=("num_workers",),
                    data={"classes": ["a", "b", "c"]})
    message = str(error.value)
    assert "--lr 0.1 -> 0.2" in message and "--max-steps-per-epoch None -> 5" in message
    assert "classes 2 -> 3" in message and "--overwrite" in message
    # Tuples read back from JSON as lists, and `may_change` keys may differ: neither counts as a difference.
    resumed = again.start(model, optimizer, {**SETTINGS, "num_workers": 0}, may_change=("num_workers",),
                          data={"classes": ["a", "b"]})
    assert resumed.epoch == 1


def test_a_checkpoint_of_the_earlier_classifier_layout_is_checked_too(tmp_path):
    """Earlier classifier checkpoints kept options and data facts in one flat dict."""
    model, optimizer = network_and_optimizer()
    flat = {"lr": 0.1, "classes": ["a", "b"], "n_train": 10}
    save_checkpoint(tmp_path / "checkpoint", model, optimizer, {"epoch": 1, "best_score": 0.5, "best_epoch": 1,
                                                                 "bad_epochs": 0, "history": [{}], "settings": flat})
    run = RunFolder(tmp_path, resume=True)
    with pytest.raises(RunFolderError, match="n_train 10 -> 11"):
        run.start(model, optimizer, {"lr": 0.1}, data={"classes": ["a", "b"], "n_train": 11})
    assert run.start(model, optimizer, {"lr": 0.1}, data={"classes": ["a", "b"], "n_train": 10}).epoch == 1


def test_progress_keeps_the_best_epoch_and_stops_after_patience_epochs_without_improvement():
    progress = Progress()
    improved = [progress.end_epoch({"epoch": e}, score=s) for e, s in enumerate([0.5, 0.7, 0.7, 0.6], start=1)]
    assert improved == [True, True, False, False]  # a tie is no improvement
    assert progress.best_epoch == 2 and progress.best_score == 0.7 and progress.bad_epochs == 2
    assert progress.running(epochs=10, patience=3) and not progress.running(epochs=10, patience=2)
    assert not progress.running(epochs=4)  # all epochs done
    no_validation = Progress()
    assert all(no_validation.end_epoch({}) for _ in range(3))  # without a score the last epoch is kept
    assert no_validation.best_epoch == 3 and no_validation.best_score == -math.inf


def test_progress_reads_checkpoints_that_kept_fewer_fields():
    assert Progress.from_dict({"epoch": 2, "history": [{}, {}]}).running(epochs=3, patience=1)
    segmenter = Progress.from_dict({"epoch": 1, "best_score": -math.inf, "best_epoch": None})
    assert segmenter.best_epoch == 0 and segmenter.history == []


def test_learning_rate_is_scaled_per_parameter_group():
    encoder, decoder = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW([{"params": encoder.parameters(), "lr_scale": 0.1}, {"params": decoder.parameters()}])
    set_learning_rate(optimizer, 1e-3)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-4, 1e-3])
