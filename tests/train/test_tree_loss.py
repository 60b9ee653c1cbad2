"""The tree-sum loss (`--tree-loss-weight`): cross-entropy over the training classes plus the NLL of the true 3- and
9-way nodes, with the node probabilities the tree sum gives at inference."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from dermlens.models import read_config
from dermlens.taxonomy import TrainingClass, TreeSum, default_taxonomy
from dermlens.train.distributed import weighted_loss_terms
from dermlens.train.recipe import TrainConfig, train
from dermlens.train.tree_loss import TreeSumLoss, level_groups

# Two malignant, two benign and three non-neoplastic classes; one sits at a first-level node (above the nine).
CLASSES = [
    TrainingClass("melanoma", 10), TrainingClass("basal_cell_carcinoma", 10),
    TrainingClass("melanocytic_nevus", 10), TrainingClass("seborrheic_keratosis", 10),
    TrainingClass("psoriasis", 10), TrainingClass("atopic_dermatitis", 10),
    TrainingClass("non_neoplastic", 3, own_only=True),
]
PSORIASIS, ATOPIC, NON_NEOPLASTIC_OWN = 4, 5, 6


@pytest.fixture(scope="module")
def taxonomy():
    return default_taxonomy()


def test_groups_are_the_tree_sums_nodes_and_a_class_above_a_level_is_its_own_group(taxonomy):
    names, group_of = level_groups(taxonomy, CLASSES, 1)
    assert names == ["benign", "malignant", "non_neoplastic"]
    assert [names[g] for g in group_of] == ["malignant", "malignant", "benign", "benign",
                                            "non_neoplastic", "non_neoplastic", "non_neoplastic"]
    names, group_of = level_groups(taxonomy, CLASSES, 2)
    assert [names[g] for g in group_of] == ["malignant_melanocytic", "malignant_epidermal", "benign_melanocytic",
                                            "benign_epidermal", "inflammatory", "inflammatory", "non_neoplastic"]


def test_the_tree_terms_are_the_nll_of_the_nodes_that_inference_reports(taxonomy):
    torch.manual_seed(0)
    logits, targets = torch.randn(12, len(CLASSES), dtype=torch.float64) * 3, torch.arange(12) % len(CLASSES)
    loss = TreeSumLoss(taxonomy, CLASSES, tree_weight=1.0)
    node_probs = TreeSum(taxonomy, CLASSES)(torch.softmax(logits, 1).numpy())
    node_ids = list(taxonomy)
    for level in (1, 2):
        names, group_of = level_groups(taxonomy, CLASSES, level)
        true_nodes = [names[group_of[t]] for t in targets]
        expected = [-np.log(node_probs[i, node_ids.index(n)]) if n != "non_neoplastic" or level == 1
                    else -np.log(torch.softmax(logits, 1)[i, NON_NEOPLASTIC_OWN].item())  # its own group at level 2
                    for i, n in enumerate(true_nodes)]
        np.testing.assert_allclose(loss.node_nll(logits, targets, level).numpy(), expected, rtol=1e-6)


def test_with_weight_zero_it_is_the_plain_cross_entropy_value_and_gradient(taxonomy):
    torch.manual_seed(1)
    logits = torch.randn(9, len(CLASSES), requires_grad=True)
    targets = torch.tensor([0, 1, 2, 3, 4, 5, 6, 4, 0])
    class_weight = torch.rand(len(CLASSES)) + 0.5
    ours = TreeSumLoss(taxonomy, CLASSES, 0.0, class_weight, label_smoothing=0.1)(logits, targets)
    (grad_ours,) = torch.autograd.grad(ours, logits)
    plain = torch.nn.CrossEntropyLoss(weight=class_weight, label_smoothing=0.1)(logits, targets)
    (grad_plain,) = torch.autograd.grad(plain, logits)
    torch.testing.assert_close(ours, plain)
    torch.testing.assert_close(grad_ours, grad_plain)


def test_moving_probability_within_the_true_node_costs_nothing_more(taxonomy):
    # All the probability on the two inflammatory classes: the 3- and 9-way answers are certain and right, so the
    # tree terms are zero with zero gradient, while the fine cross-entropy still pushes psoriasis over eczema.
    logits = torch.full((1, len(CLASSES)), -50.0, dtype=torch.float64)
    logits[0, [PSORIASIS, ATOPIC]] = torch.tensor([0.0, 1.0], dtype=torch.float64)
    logits.requires_grad_(True)
    loss = TreeSumLoss(taxonomy, CLASSES, tree_weight=1.0)
    tree = loss.tree_terms(logits, torch.tensor([PSORIASIS]))
    (grad,) = torch.autograd.grad(tree.sum(), logits)
    assert abs(tree.item()) < 1e-12 and grad.abs().max() < 1e-12
    (grad_fine,) = torch.autograd.grad(loss(logits, torch.tensor([PSORIASIS])), logits)
    assert grad_fine[0, PSORIASIS] < -0.1  # the fine term alone still moves it
    # Probability on a malignant class instead: the tree terms push it back to the true node's classes.
    wrong = logits.detach().clone()
    wrong[0, 0] = 3.0
    wrong.requires_grad_(True)
    (grad,) = torch.autograd.grad(loss.tree_terms(wrong, torch.tensor([PSORIASIS])).sum(), wrong)
    assert grad[0, 0] > 0.1 and grad[0, PSORIASIS] < 0 and grad[0, ATOPIC] < 0


def test_finite_for_extreme_logits_and_the_gradient_matches_finite_differences(taxonomy):
    loss = TreeSumLoss(taxonomy, CLASSES, tree_weight=0.5).double()
    extreme = torch.tensor([[1e4, -1e4, 0, 0, -1e4, -1e4, -1e4]], dtype=torch.float64, requires_grad=True)
    value = loss(extreme, torch.tensor([PSORIASIS]))  # the true node's probability underflows to exp(-1e4)
    (grad,) = torch.autograd.grad(value, extreme)
    assert torch.isfinite(value) and value > 1e3 and torch.isfinite(grad).all()
    torch.manual_seed(2)
    logits = torch.randn(5, len(CLASSES), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: loss(x, torch.tensor([0, 2, 4, 6, 5])), (logits,))


def test_the_distributed_sums_reproduce_the_mean(taxonomy):
    torch.manual_seed(3)
    logits, targets = torch.randn(8, len(CLASSES)), torch.tensor([0, 1, 2, 3, 4, 5, 6, 6])
    loss = TreeSumLoss(taxonomy, CLASSES, 0.5, torch.rand(len(CLASSES)) + 0.5, label_smoothing=0.1)
    loss_sum, weight_sum = weighted_loss_terms(logits, targets, loss)
    torch.testing.assert_close(loss_sum / weight_sum, loss(logits, targets))
    assert loss(logits, targets) > TreeSumLoss(taxonomy, CLASSES, 0.0, loss.weight, label_smoothing=0.1)(logits, targets)


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf")])
def test_a_weight_that_is_not_a_finite_non_negative_number_is_refused(taxonomy, bad):
    with pytest.raises(ValueError, match="tree-loss-weight must be a finite number >= 0"):
        TreeSumLoss(taxonomy, CLASSES, bad)


# -- in the recipe -------------------------------------------------------------------------------------------------

FAST = TrainConfig(image_size=32, epochs=1, batch_size=8, max_steps_per_epoch=1, num_workers=0, max_class_size=1)


def test_the_weight_is_saved_with_the_model_and_changes_what_is_learnt(tmp_path, synthetic_parts):
    plain = train(synthetic_parts["train"], synthetic_parts["val"], tmp_path / "plain", FAST, progress=False)
    tree = train(synthetic_parts["train"], synthetic_parts["val"], tmp_path / "tree",
                 replace(FAST, tree_loss_weight=0.5), progress=False)
    assert read_config(tree.model_dir).training["config"]["tree_loss_weight"] == 0.5
    assert read_config(plain.model_dir).training["config"]["tree_loss_weight"] == 0.0
    rows = [json.loads(line) for name in ("plain", "tree")
            for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    assert rows[1]["train_loss"] > rows[0]["train_loss"]  # same batch, same start: the extra terms are counted


def test_a_resume_keeps_the_weight_and_refuses_another_one(tmp_path, synthetic_parts):
    cfg = replace(FAST, tree_loss_weight=0.5)
    train(synthetic_parts["train"], synthetic_parts["val"], tmp_path / "tree", cfg, progress=False)
    for other in (0.0, 1.0):
        with pytest.raises(ValueError, match="cannot resume with other settings") as error:
            train(synthetic_parts["train"], synthetic_parts["val"], tmp_path / "tree",
                  replace(cfg, tree_loss_weight=other), resume=True, progress=False)
        assert "--tree-loss-weight 0.5 ->" in str(error.value)
    resumed = train(synthetic_parts["train"], synthetic_parts["val"], tmp_path / "tree", cfg, resume=True,
                    progress=False)  # the same weight: accepted (the run is finished, so nothing more is trained)
    assert len(resumed.history) == 1 and read_config(resumed.model_dir).training["config"]["tree_loss_weight"] == 0.5
    # A run without the tree loss checkpoints no such setting (as runs from before the option did): it resumes with
    # the default, and refuses a weight it was not trained with.
    train(synthetic_parts["train"], synthetic_parts["val"], tmp_path / "plain", FAST, progress=False)
    with pytest.raises(ValueError, match="--tree-loss-weight None -> 0.5"):
        train(synthetic_parts["train"], synthetic_parts["val"], tmp_path / "plain",
              replace(FAST, tree_loss_weight=0.5), resume=True, progress=False)
    assert len(train(synthetic_parts["train"], synthetic_parts["val"], tmp_path / "plain", FAST, resume=True,
                     progress=False).history) == 1
