"""The training recipe: class-imbalance handling, LR schedule, early stopping, per-epoch log and checkpoint,
and the operating point chosen on validation data."""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch

from dermlens.evaluate import sensitivity_specificity
from dermlens.models import read_config
from dermlens.taxonomy import default_taxonomy
from dermlens.train import loop, recipe
from dermlens.train.balance import class_balance
from dermlens.train.checkpoint import TENSORS_FILE
from dermlens.train.loop import learning_rate
from dermlens.train.recipe import TrainConfig, train

FAST = TrainConfig(image_size=32, epochs=2, batch_size=8, max_steps_per_epoch=1, num_workers=0, max_class_size=1)


# ---------------------------------------------------------------------------------------------------------------
# Class imbalance
# ---------------------------------------------------------------------------------------------------------------

TARGETS = [0] * 80 + [1] * 15 + [2] * 5  # 80 / 15 / 5 images


def per_class(sample_weights, n_classes=3) -> np.ndarray:
    """Total sampling mass of each class."""
    w = np.asarray(sample_weights, dtype=float)
    return np.array([w[np.asarray(TARGETS) == c].sum() for c in range(n_classes)])


def test_balance_none_changes_nothing():
    sampling, loss = class_balance(TARGETS, 3, "none")
    assert sampling is None
    assert torch.equal(loss, torch.ones(3))


def test_balance_loss_weights_equalise_the_classes():
    sampling, loss = class_balance(TARGETS, 3, "loss")
    assert sampling is None
    counts = np.bincount(TARGETS)
    contribution = loss.numpy() * counts  # each class's share of the summed loss
    assert np.allclose(contribution, contribution[0])
    assert loss[2] > loss[1] > loss[0]


def test_balance_sampler_draws_every_class_equally_often():
    sampling, loss = class_balance(TARGETS, 3, "sampler")
    assert len(sampling) == len(TARGETS)
    mass = per_class(sampling)
    assert np.allclose(mass, mass[0])
    assert torch.equal(loss, torch.ones(3))


def test_balance_sqrt_splits_the_correction_between_sampling_and_loss():
    sampling, loss = class_balance(TARGETS, 3, "sqrt")
    counts = np.bincount(TARGETS)
    mass = per_class(sampling)
    # Sampling alone moves each class to sqrt(n): halfway (in log terms) between as-is and equal.
    assert np.allclose(mass / mass.sum(), np.sqrt(counts) / np.sqrt(counts).sum())
    # Sampling and loss weights together give every class the same expected weight in the loss...
    effective = mass * loss.numpy()
    assert np.allclose(effective, effective[0])
    # ...with milder extremes than full loss re-weighting.
    full = class_balance(TARGETS, 3, "loss")[1]
    assert loss.max() / loss.min() < full.max() / full.min()


def test_balance_tree_shares_draws_by_group_then_by_class_within_it():
    # Group "a": one large class of 64; group "b": four classes of 4 (an atlas split into many small topics).
    targets = [0] * 64 + [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4
    sampling, loss = class_balance(targets, 5, "tree", ["a", "b", "b", "b", "b"])
    w = sampling.numpy()
    mass = np.array([w[np.asarray(targets) == c].sum() for c in range(5)]) / w.sum()
    assert mass[0] == pytest.approx(8 / (8 + 4))  # groups by sqrt(images): sqrt(64) vs sqrt(16)
    assert np.allclose(mass[1:], (4 / 12) / 4)  # within a group, classes by sqrt(images): equal here
    assert torch.equal(loss, torch.ones(5))  # by sampling alone
    # Square-root sampling per class would give the four small classes half of all draws; the tree gives a third.
    per_class_share = np.sqrt([64, 4, 4, 4, 4]) / np.sqrt([64, 4, 4, 4, 4]).sum()
    assert per_class_share[1:].sum() == pytest.approx(0.5) and mass[1:].sum() == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="needs the first-level group"):
        class_balance(targets, 5, "tree")


def test_balance_handles_a_class_without_images_and_rejects_unknown_modes():
    sampling, loss = class_balance([0, 0, 1], 3, "loss")
    assert torch.isfinite(loss).all()
    with pytest.raises(ValueError, match="balance must be"):
        class_balance(TARGETS, 3, "oversample")


# ---------------------------------------------------------------------------------------------------------------
# Learning-rate schedule
# ---------------------------------------------------------------------------------------------------------------

def closed_form(step: int, total: int, warmup: int, base: float) -> float:
    """The schedule written out: linear warm-up (step + 1) / warmup, then half a cosine to 0 at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


@pytest.mark.parametrize("total, warmup", [(100, 10), (37, 1), (20, 0), (6, 2)])
def test_torch_s_schedulers_give_the_schedule_s_values_at_every_step(total, warmup):
    lrs = [learning_rate(s, total, warmup, 3e-4) for s in range(total + 3)]
    assert lrs == pytest.approx([closed_form(s, total, warmup, 3e-4) for s in range(total + 3)], rel=1e-9, abs=1e-15)


def test_a_resumed_run_asks_for_its_step_directly_and_an_earlier_step_starts_over():
    from dermlens.train.loop import WarmupCosine

    schedule = WarmupCosine(50, 5, 1e-3)
    assert schedule(30) == pytest.approx(closed_form(30, 50, 5, 1e-3), rel=1e-9)
    assert schedule(2) == pytest.approx(closed_form(2, 50, 5, 1e-3), rel=1e-9)


def test_learning_rate_warms_up_linearly_then_decays_by_cosine_to_zero():
    total, warmup, base = 100, 10, 1e-3
    lrs = [learning_rate(s, total, warmup, base) for s in range(total)]
    assert lrs[0] == pytest.approx(base / warmup)
    assert lrs[warmup - 1] == pytest.approx(base)  # warm-up reaches the peak
    assert all(b > a for a, b in zip(lrs[:warmup - 1], lrs[1:warmup]))
    assert all(b <= a for a, b in zip(lrs[warmup:], lrs[warmup + 1:]))
    assert max(lrs) == pytest.approx(base)
    mid = warmup + (total - warmup) // 2
    assert lrs[mid] == pytest.approx(base / 2, rel=0.05)  # half-way through the cosine: half the peak
    assert learning_rate(total, total, warmup, base) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(total + 50, total, warmup, base) == pytest.approx(0.0, abs=1e-12)  # never negative
    assert learning_rate(0, total, 0, base) == pytest.approx(base)  # no warm-up: start at the peak


def test_training_follows_the_schedule(tmp_path, synthetic_parts):
    cfg = replace(FAST, epochs=3, max_steps_per_epoch=2, lr=1e-3, warmup_epochs=1.0)
    result = train(synthetic_parts["train"], synthetic_parts["val"], tmp_path, cfg, progress=False)
    steps = 2
    for row in result.history:  # the lr logged is the one of the epoch's last step
        last_step = row["epoch"] * steps - 1
        assert row["lr"] == pytest.approx(learning_rate(last_step, 3 * steps, steps, 1e-3))


# ---------------------------------------------------------------------------------------------------------------
# Early stopping, log and checkpoints
# ---------------------------------------------------------------------------------------------------------------

def test_early_stopping_after_patience_epochs_without_improvement(tmp_path, synthetic_parts, monkeypatch):
    saved_epochs = []
    real_save = loop.save_checkpoint

    def save_checkpoint(directory, model, optimizer, progress):
        saved_epochs.append(progress["epoch"])
        real_save(directory, model, optimizer, progress)

    monkeypatch.setattr(loop, "save_checkpoint", save_checkpoint)
    # A validation score that never moves: the first epoch is the best and every later one is a bad one.
    monkeypatch.setattr(recipe, "selection_score", lambda *args: 0.5)
    cfg = replace(FAST, epochs=10, patience=2)
    result = train(synthetic_parts["train"], synthetic_parts["val"], tmp_path, cfg, progress=False)
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert result.best_epoch == 1
    assert saved_epochs == [1, 2, 3]  # a checkpoint every epoch
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert read_config(result.model_dir).training["best_epoch"] == 1


def test_metrics_log_has_one_row_per_epoch_with_the_figures(tiny_model):
    log = tiny_model.model_dir.parent / "metrics.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, len(tiny_model.history) + 1))
    assert len(rows) == 2  # TINY_TRAIN_CONFIG trains two epochs and does not stop early with patience 4
    for row in rows:
        for key in ("train_loss", "val_loss", "val_balanced_accuracy", "val_accuracy", "lr", "images_per_second"):
            assert isinstance(row[key], float) and math.isfinite(row[key]), key
        assert 0 <= row["val_balanced_accuracy"] <= 1
    assert rows == tiny_model.history
    assert (tiny_model.model_dir.parent / "checkpoint" / TENSORS_FILE).is_file()


def test_a_new_run_in_the_same_folder_starts_a_fresh_log(tmp_path, synthetic_parts):
    cfg = replace(FAST, epochs=1)
    train(synthetic_parts["train"], synthetic_parts["val"], tmp_path, cfg, progress=False)
    train(synthetic_parts["train"], synthetic_parts["val"], tmp_path, cfg, overwrite=True, progress=False)
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_progress_bar_and_epoch_summary_on_stderr(tmp_path, synthetic_parts, capfd):
    train(synthetic_parts["train"], synthetic_parts["val"], tmp_path, replace(FAST, epochs=1), progress=True)
    err = capfd.readouterr().err
    assert "epoch 1/1" in err  # the tqdm bar
    assert "val balanced acc" in err


def test_training_needs_training_and_validation_images(tmp_path, synthetic_parts):
    with pytest.raises(ValueError, match="need training and validation images"):
        train(synthetic_parts["train"], [], tmp_path, FAST, progress=False)


# ---------------------------------------------------------------------------------------------------------------
# Operating point
# ---------------------------------------------------------------------------------------------------------------

def test_operating_point_reaches_the_target_sensitivity_on_validation(tiny_model_dir, predictor, synthetic_parts):
    op = read_config(tiny_model_dir).operating_point
    assert op.node == "malignant" and op.target_sensitivity == 0.9
    assert op.chosen_on.startswith("validation")
    val = synthetic_parts["val"]
    predictions = predictor.predict([str(r.path) for r in val])
    p_malignant = np.array([p.probabilities["malignant"] for p in predictions])
    tax = default_taxonomy()
    truth = np.array([tax.ancestor_at_level(r.node, 1) == "malignant" for r in val])
    assert truth.any() and not truth.all()
    sensitivity, specificity = sensitivity_specificity(truth, p_malignant, op.threshold)
    assert sensitivity >= 0.9
    assert sensitivity == pytest.approx(op.sensitivity) and specificity == pytest.approx(op.specificity)
    # As specific as the target allows: moved up past the next validation score, it would miss the target...
    next_score = p_malignant[p_malignant >= op.threshold].min()
    assert sensitivity_specificity(truth, p_malignant, next_score + 1e-9)[0] < op.target_sensitivity
    # ...and no validation image sits on the threshold, where float noise in another engine would flip its call.
    assert np.abs(p_malignant - op.threshold).min() > 1e-4


def test_validation_images_of_an_untrained_class_are_left_out(tmp_path, synthetic_parts):
    train_part = [r for r in synthetic_parts["train"] if r.node != "dermatofibroma"]
    result = train(train_part, synthetic_parts["val"], tmp_path, replace(FAST, epochs=1), progress=False)
    config = read_config(result.model_dir)
    assert "dermatofibroma" not in config.class_nodes
    n_df = Counter(r.node for r in synthetic_parts["val"])["dermatofibroma"]
    assert config.training["n_val"] == len(synthetic_parts["val"]) - n_df


def test_a_partition_into_one_class_is_an_error_that_says_what_to_change(tmp_path, synthetic_parts):
    cfg = replace(FAST, max_class_size=1000)  # the synthetic set has a few hundred images: one class, "root"
    with pytest.raises(ValueError, match=r"--max-class-size 1000 partitions .* into 1 class \(root\).*lower --max-class-size"):
        train(synthetic_parts["train"], synthetic_parts["val"], tmp_path, cfg, progress=False)
    assert not (tmp_path / "model").exists()


def test_selection_score_weighs_each_validation_source_alike():
    import numpy as np

    targets = [0, 1] * 50 + [0, 1]  # 100 images of a large source, 2 of a small one
    sources = ["big"] * 100 + ["small"] * 2
    predicted = np.array(targets[:100] + [1, 0])  # perfect on the large source, all wrong on the small one
    assert recipe.selection_score(targets, predicted, sources) == pytest.approx(0.5)
    assert recipe.selection_score(targets[:100], predicted[:100], sources[:100]) == pytest.approx(1.0)
