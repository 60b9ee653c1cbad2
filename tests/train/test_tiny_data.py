"""Training on too little data says so in one line, before anything is written: too few images to hold out a
validation part (not scikit-learn's traceback), or fewer training images than one batch (no step would run, and
an untrained model would be saved as if trained)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dermlens.cli import app
from dermlens.data.datasets import load_records
from dermlens.data.splits import TooFewImagesError, grouped_kfold


def class_folders(root, counts: dict[str, int]):
    rng = np.random.default_rng(0)
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for k in range(count):
            Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(root / name / f"{name}{k}.png")
    return root


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_five_images_in_two_classes_is_one_line_not_a_scikit_learn_traceback(tmp_path):
    data = class_folders(tmp_path / "data", {"melanoma": 3, "nevus": 2})
    out = tmp_path / "run"
    line = one_line_error(CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(out)]))
    assert "5 images" in line and "too few" in line and "validation" in line and "n_splits" not in line
    assert not out.exists()


def test_fewer_training_images_than_a_batch_is_refused_instead_of_saving_an_untrained_model(tmp_path):
    data = class_folders(tmp_path / "data", {"melanoma": 8, "nevus": 8})
    out = tmp_path / "run"
    line = one_line_error(CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(out), "--workers", "0"]))
    assert "fewer than one batch of 32" in line and "no training step" in line and "--batch-size" in line
    assert not (out / "model").exists() and not (out / "checkpoint").exists()


def test_the_study_s_folds_say_the_same(tmp_path):
    records = load_records(class_folders(tmp_path / "data", {"melanoma": 3, "nevus": 3}))
    with pytest.raises(TooFewImagesError, match="at least one class needs 4 images"):
        next(grouped_kfold(records, 4))
