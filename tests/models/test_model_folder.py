"""The model folder (models/folder.py): copies and re-tunes load whole, a kill never leaves a half-written part,
and folders written by earlier versions (the bundled one) still load."""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import torch

from dermlens.models import folder, read_config
from dermlens.predict import Predictor


def digests(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir() if p.is_file()}


def test_a_copy_holds_every_part_and_answers_alike(two_modality_model_dir, tmp_path, image_cases):
    copy = folder.copy_folder(two_modality_model_dir, tmp_path / "copy")
    assert digests(copy) == digests(two_modality_model_dir)
    photo = image_cases.good["rgb"][0]
    a, b = Predictor(two_modality_model_dir).analyse(photo)[0], Predictor(copy).analyse(photo)[0]
    assert b.gate.quality == a.gate.quality and b.gate.ood_score == pytest.approx(a.gate.ood_score)
    assert (b.modality, b.triage, b.operating_point) == (a.modality, a.triage, a.operating_point)


@pytest.mark.parametrize("dies_at", range(8))
def test_a_copy_killed_at_any_file_is_either_no_model_or_a_whole_one(two_modality_model_dir, tmp_path, monkeypatch,
                                                                       dies_at):
    calls = []
    real = shutil.copy2

    def copy_then_maybe_die(src, dst, *args, **kwargs):
        calls.append(src)
        if len(calls) > dies_at:
            raise KeyboardInterrupt
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(folder.shutil, "copy2", copy_then_maybe_die)
    target = tmp_path / "copy"
    try:
        folder.copy_folder(two_modality_model_dir, target)
        finished = True
    except KeyboardInterrupt:
        finished = False
    assert not [p.name for p in target.iterdir() if p.name.startswith(".")]  # no temporary file left behind
    if (target / "config.json").is_file():
        assert finished and Predictor(target).gate.fitted
    else:
        with pytest.raises(FileNotFoundError, match="config.json"):
            read_config(target)


def test_a_config_update_killed_before_the_rename_leaves_the_old_config(two_modality_model_dir, tmp_path, monkeypatch):
    model = folder.copy_folder(two_modality_model_dir, tmp_path / "model")
    before = (model / "config.json").read_bytes()

    def dies(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(folder.os, "replace", dies)
    with pytest.raises(KeyboardInterrupt):
        folder.update_config(model, operating_point={"node": "malignant", "threshold": 0.01})
    assert (model / "config.json").read_bytes() == before
    assert sorted(p.name for p in model.iterdir()) == sorted(p.name for p in two_modality_model_dir.iterdir())


def test_a_gate_save_killed_midway_leaves_a_folder_that_loads_whole(two_modality_model_dir, tmp_path, monkeypatch):
    """The skin head is written, then the gate file dies: the config still names the previous, whole gate."""
    from dermlens.gate import Gate

    model = folder.copy_folder(two_modality_model_dir, tmp_path / "model")
    gate = Gate.load(model, read_config(model))
    gate.thresholds.min_p_skin = 0.01
    real = folder.save_file

    def dies_on_the_gate_file(tensors, path, metadata=None):
        if ".gate.safetensors." in path:
            raise KeyboardInterrupt
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(folder, "save_file", dies_on_the_gate_file)
    with pytest.raises(KeyboardInterrupt):
        gate.save(model)
    reloaded = Predictor(model).gate
    assert reloaded.fitted and reloaded.thresholds.min_p_skin == 0.5


def test_the_bundled_folder_of_an_earlier_version_loads_with_its_gate_and_recogniser(tmp_path):
    """Its gate keeps the skin head's folded weights inside gate.safetensors and its modality head is a bare affine
    map: both load, and saved again in today's format they give the same numbers."""
    from dermlens.gate import Gate
    from dermlens.models.embedding_head import EmbeddingHead
    from dermlens.models.modality import HEAD_NAME, ModalityRecogniser
    from dermlens.predict import bundled_model_dir

    bundled = bundled_model_dir()
    config = read_config(bundled)
    assert "skin_head" not in config.gate and not (bundled / "modality_head.json").exists()  # the older layout
    gate, recogniser = Gate.load(bundled, config), ModalityRecogniser.load(bundled)
    assert gate.fitted and recogniser is not None
    features = torch.randn(16, gate.skin_head.n_features_in_, generator=torch.Generator().manual_seed(0))

    copy = folder.copy_folder(bundled, tmp_path / "model")
    gate.save(copy)
    recogniser.head.save(copy, HEAD_NAME)
    assert json.loads((copy / "config.json").read_text())["gate"]["skin_head"] == "gate_skin_head"
    again = Gate.load(copy, read_config(copy))
    np.testing.assert_array_equal(again.skin_head.probability(features), gate.skin_head.probability(features))
    np.testing.assert_array_equal(again.ood.distance(features), gate.ood.distance(features))
    new_recogniser = ModalityRecogniser.load(copy)
    assert new_recogniser.recognise(features) == recogniser.recognise(features)
    assert isinstance(new_recogniser.head, EmbeddingHead) and list(new_recogniser.head.classes_) == ["dermoscopic", "clinical"]


def test_writes_leave_no_temporary_files_and_keep_permissions(tmp_path):
    folder.write_json(tmp_path / "config.json", {"a": 1})
    folder.write_tensors(tmp_path / "x.safetensors", {"w": torch.ones(2)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "x.safetensors"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == 0o666 & ~umask
