"""A model on disk is model.safetensors + config.json: round trip, taxonomy check, and no pickle anywhere."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from dermlens.data.transforms import Preprocessing
from dermlens.models import (
    ModelConfig,
    OperatingPoint,
    TaxonomyMismatchError,
    create_backbone,
    load_model,
    read_config,
    save_model,
)
from dermlens.taxonomy import Taxonomy, TrainingClass, default_taxonomy

PICKLE_MARKERS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")  # pickle protocol headers
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip container


def make_config(arch="efficientnet_lite0", taxonomy=None) -> ModelConfig:
    taxonomy = taxonomy or default_taxonomy()
    classes = [
        TrainingClass("melanoma", 10), TrainingClass("melanocytic_nevus", 30), TrainingClass("basal_cell_carcinoma", 5),
    ]
    return ModelConfig(
        arch=arch,
        preprocessing=Preprocessing(size=64),
        classes=classes,
        taxonomy_version=taxonomy.version,
        taxonomy_fingerprint=taxonomy.fingerprint(),
        operating_point=OperatingPoint(threshold=0.3, target_sensitivity=0.9, sensitivity=0.92, chosen_on="validation"),
        training={"epochs": 3},
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model, _ = create_backbone("efficientnet_lite0", num_classes=3)
    model.eval()
    directory = save_model(tmp_path_factory.mktemp("model"), model, make_config())
    return directory, model


def test_round_trip_gives_identical_outputs_and_config(saved):
    directory, model = saved
    loaded, config = load_model(directory)
    assert not loaded.training  # ready for inference
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert config == make_config()
    assert config.class_nodes == ["melanoma", "melanocytic_nevus", "basal_cell_carcinoma"]
    assert config.operating_point.threshold == 0.3


def test_timm_arch_round_trip(tmp_path):
    model, _ = create_backbone("timm:test_resnet", num_classes=3, pretrained=False)
    model.eval()
    save_model(tmp_path, model, make_config(arch="timm:test_resnet"))
    loaded, config = load_model(tmp_path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert config.arch == "timm:test_resnet"


def test_saved_files_hold_no_pickle(saved):
    directory, _ = saved
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((directory / "config.json").read_text())  # plain JSON
    assert config["arch"] == "efficientnet_lite0" and config["classes"][0]["node"] == "melanoma"
    with safe_open(str(directory / "model.safetensors"), framework="pt") as f:  # a safetensors file, tensors only
        assert "conv_stem.weight" in f.keys()
        assert f.metadata()["format"] == "dermlens"
    raw = (directory / "model.safetensors").read_bytes()
    header_length = int.from_bytes(raw[:8], "little")
    json.loads(raw[8:8 + header_length])  # the safetensors header is JSON, the rest raw numbers
    assert not raw.startswith(ZIP_MAGIC) and not any(raw.startswith(m) for m in PICKLE_MARKERS)


def test_loading_with_another_taxonomy_is_a_clear_error(saved):
    directory, _ = saved
    other = Taxonomy.from_dict({
        "version": "other-1",
        "tree": {"id": "root", "name": "Root", "children": [
            {"id": "melanoma", "name": "Melanoma", "children": []},
            {"id": "melanocytic_nevus", "name": "Nevus", "children": []},
            {"id": "basal_cell_carcinoma", "name": "BCC", "children": []},
        ]},
    })
    with pytest.raises(TaxonomyMismatchError) as info:
        load_model(directory, taxonomy=other)
    message = str(info.value)
    assert "other-1" in message and default_taxonomy().version in message and str(directory) in message

    tiny = Taxonomy.from_dict({"version": "tiny", "tree": {"id": "root", "name": "Root", "children": []}})
    with pytest.raises(TaxonomyMismatchError, match="unknown training-class nodes"):
        load_model(directory, taxonomy=tiny)


def test_a_config_whose_fingerprint_was_edited_is_refused(saved, tmp_path):
    directory, _ = saved
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((directory / name).read_bytes())
    config = json.loads((tmp_path / "config.json").read_text())
    config["taxonomy_fingerprint"] = "0000000000000000"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(TaxonomyMismatchError):
        load_model(tmp_path)


def test_missing_and_broken_model_folders(saved, tmp_path):
    directory, _ = saved
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid dermlens model config"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text((directory / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_model(tmp_path)
    newer = json.loads((directory / "config.json").read_text())
    newer["format_version"] = 99
    (tmp_path / "config.json").write_text(json.dumps(newer))
    with pytest.raises(ValueError, match="newer"):
        read_config(tmp_path)


def test_trained_run_folder_holds_only_json_and_safetensors(synthetic_parts, tmp_path):
    from dermlens.train.recipe import TrainConfig, train

    cfg = TrainConfig(image_size=32, epochs=1, batch_size=8, max_steps_per_epoch=1, num_workers=0, max_class_size=1)
    result = train(synthetic_parts["train"], synthetic_parts["val"], tmp_path / "run", cfg, progress=False)
    run = result.model_dir.parent
    files = [p for p in run.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".json", ".jsonl", ".safetensors"}, files
    for path in files:
        head = path.read_bytes()[:4]
        assert not head.startswith(ZIP_MAGIC) and not any(head.startswith(m) for m in PICKLE_MARKERS), path
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                assert len(f.keys()) > 0


# ---------------------------------------------------------------------------------------------------------------
# The one format under every model kind: save_weights / load_weights
# ---------------------------------------------------------------------------------------------------------------

def test_save_weights_round_trip_keeps_tensors_config_and_other_files(tmp_path):
    from dermlens.models.saved import load_weights, save_weights

    state = {"conv.weight": torch.randn(4, 3, 3, 3).to(memory_format=torch.channels_last),
             "head.bias": torch.arange(5, dtype=torch.float64), "bn.num_batches_tracked": torch.tensor(7)}
    config = {"network": "x", "input_size": [64, 48], "training": {"history": [{"epoch": 1, "loss": 0.5}]}}
    (tmp_path / "modality_head.safetensors").write_bytes(b"left alone")
    save_weights(tmp_path, state, config, metadata={"arch": "x"})
    loaded, loaded_config = load_weights(tmp_path)
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) and loaded[k].dtype == state[k].dtype for k in state)
    assert loaded_config == config
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "dermlens", "arch": "x"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json", "modality_head.safetensors", "model.safetensors"]  # no temporary files left
    assert (tmp_path / "modality_head.safetensors").read_bytes() == b"left alone"


def test_a_write_that_dies_leaves_the_previous_model_whole(tmp_path, monkeypatch):
    from dermlens.models import folder, saved

    saved.save_weights(tmp_path, {"w": torch.ones(3)}, {"version": 1})

    def dies(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(folder, "save_file", dies)
    with pytest.raises(KeyboardInterrupt):
        saved.save_weights(tmp_path, {"w": torch.zeros(3)}, {"version": 2})
    state, config = saved.load_weights(tmp_path)
    assert torch.equal(state["w"], torch.ones(3)) and config == {"version": 1}


def test_load_weights_names_what_is_missing_or_broken(tmp_path):
    from dermlens.models.saved import load_weights

    with pytest.raises(FileNotFoundError, match="config.json"):
        load_weights(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"config.json: not a valid dermlens model config \(a JSON object"):
        load_weights(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors: weights file missing"):
        load_weights(tmp_path)


def test_the_bundled_model_folders_load_through_the_one_format_unchanged():
    """Folders written before save_weights existed (the shipped classifier and segmenter) read as they are."""
    import hashlib

    from dermlens.models.saved import load_weights
    from dermlens.predict import bundled_model_dir
    from dermlens.segment.segmenter import BUNDLED_SEGMENTER_DIR

    for directory in (bundled_model_dir(), BUNDLED_SEGMENTER_DIR):
        def digests():
            return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir() if p.is_file()}

        before = digests()
        state, config = load_weights(directory)
        assert state and all(isinstance(v, torch.Tensor) for v in state.values()) and isinstance(config, dict)
        assert digests() == before
    assert read_config(bundled_model_dir()).to_dict()["classes"] == load_weights(bundled_model_dir())[1]["classes"]
