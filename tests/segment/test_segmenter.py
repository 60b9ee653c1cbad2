"""The dermoscopy segmenter: networks, save/load, a tiny training run with resume, and the CLI."""
import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dermlens.cli import app
from dermlens.models.segmentation import LiteUNet, SmallUNet, create_network
from dermlens.segment.pairs import load_pairs
from dermlens.segment.segmenter import Segmenter, SegmenterConfig, load_segmenter, save_segmenter
from dermlens.segment.training import SegmentTrainConfig, train_segmenter
from dermlens.train.loop import RunFolderError

TINY = SegmentTrainConfig(input_size=(64, 48), epochs=2, batch_size=8, lr=3e-3, max_steps_per_epoch=3, warmup_epochs=0.0)


@pytest.mark.parametrize("height,width", [(48, 64), (45, 61)])
def test_networks_keep_any_input_size(height, width):
    with torch.no_grad():
        assert LiteUNet(pretrained=False).eval()(torch.randn(1, 3, height, width)).shape == (1, 1, height, width)
        assert SmallUNet().eval()(torch.randn(2, 1, height, width)).shape == (2, 1, height, width)


def test_lite_unet_encoder_starts_from_the_classifier_imagenet_weights():
    from dermlens.models.backbones import efficientnet_lite0

    classifier = efficientnet_lite0(num_classes=2)
    unet = LiteUNet(pretrained=True)
    assert torch.equal(unet.encoder.conv_stem.weight, classifier.conv_stem.weight)
    assert torch.equal(unet.encoder.blocks[6][0].conv_pwl.weight, classifier.blocks[6][0].conv_pwl.weight)
    with pytest.raises(ValueError, match="unknown segmentation network"):
        create_network("nope")


def test_save_load_round_trip(tmp_path):
    model = LiteUNet(pretrained=False).eval()
    save_segmenter(tmp_path, model, SegmenterConfig(input_size=(64, 48)))
    loaded, config = load_segmenter(tmp_path)
    assert config.input_size == (64, 48)
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x))
    with pytest.raises(FileNotFoundError, match="not a dermlens segmenter"):
        load_segmenter(tmp_path / "elsewhere")


def test_load_pairs_reads_splits_and_names_missing_columns(lesion_masks_dataset, tmp_path):
    assert len(load_pairs(lesion_masks_dataset, "train")) == 24
    assert len(load_pairs(lesion_masks_dataset)) == 40
    with pytest.raises(ValueError, match="no split 'nope'"):
        load_pairs(lesion_masks_dataset, "nope")
    (tmp_path / "labels.csv").write_text("image,diagnosis\na.jpg,nv\n")
    with pytest.raises(ValueError, match="needs columns 'image' and 'mask'"):
        load_pairs(tmp_path)


@pytest.fixture(scope="module")
def tiny_segmenter_run(lesion_masks_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("seg-run")
    train_segmenter(load_pairs(lesion_masks_dataset, "train"), load_pairs(lesion_masks_dataset, "val"), out, TINY,
                    progress=False)
    return out


def test_training_writes_model_log_and_checkpoint(tiny_segmenter_run):
    log = [json.loads(line) for line in (tiny_segmenter_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert all(0 <= r["val_mean_jaccard"] <= 1 for r in log)
    _, config = load_segmenter(tiny_segmenter_run / "model")
    assert config.input_size == (64, 48) and config.target == "fraction"
    assert config.training["best_epoch"] in (1, 2)


@pytest.mark.slow
def test_training_learns_the_lesions(lesion_masks_dataset, tmp_path):
    """Dark ellipses on skin are easy: a few dozen steps must beat the untrained network clearly."""
    cfg = SegmentTrainConfig(input_size=(64, 48), epochs=4, batch_size=8, lr=3e-3, max_steps_per_epoch=3, warmup_epochs=0.0)
    train_segmenter(load_pairs(lesion_masks_dataset, "train"), load_pairs(lesion_masks_dataset, "val"), tmp_path, cfg,
                    progress=False)
    log = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert max(r["val_mean_jaccard"] for r in log) > 0.6, log


def test_resume_equals_uninterrupted(lesion_masks_dataset, tmp_path, tiny_segmenter_run, killed_after_first_checkpoint):
    from safetensors.torch import load_file

    train, val = load_pairs(lesion_masks_dataset, "train"), load_pairs(lesion_masks_dataset, "val")
    with killed_after_first_checkpoint():  # a kill right after epoch 1's checkpoint
        train_segmenter(train, val, tmp_path, TINY, progress=False)
    with pytest.raises(RunFolderError, match="holds a training run already: add --resume .* or --overwrite"):
        train_segmenter(train, val, tmp_path, TINY, progress=False)
    with pytest.raises(RunFolderError, match="--lr 0.003 -> 0.001"):  # a resume keeps the run's settings
        train_segmenter(train, val, tmp_path, replace(TINY, lr=1e-3), resume=True, progress=False)
    train_segmenter(train, val, tmp_path, TINY, resume=True, progress=False)
    assert [json.loads(line)["epoch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    a = load_file(str(tmp_path / "checkpoint" / "checkpoint.safetensors"))
    b = load_file(str(tiny_segmenter_run / "checkpoint" / "checkpoint.safetensors"))
    for key in a:
        if key.startswith("model."):
            assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_overwrite_starts_a_used_folder_again(lesion_masks_dataset, tmp_path):
    train, val = load_pairs(lesion_masks_dataset, "train"), load_pairs(lesion_masks_dataset, "val")
    one_epoch = replace(TINY, epochs=1, max_steps_per_epoch=1)
    train_segmenter(train, val, tmp_path, one_epoch, progress=False)
    train_segmenter(train, val, tmp_path, replace(one_epoch, lr=1e-3), progress=False, overwrite=True)
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
    assert load_segmenter(tmp_path / "model")[1].training["recipe"]["lr"] == 1e-3


def test_segmenter_outputs_fractions_at_the_photo_size(tiny_segmenter_run):
    segmenter = Segmenter(tiny_segmenter_run / "model")
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (123, 171, 3), dtype=np.uint8))
    fraction = segmenter.fraction(photo)
    assert fraction.shape == (123, 171)
    assert fraction.min() >= 0 and fraction.max() <= 1


def test_cli_segment_writes_pngs_and_measurements_and_goes_past_a_bad_file(tiny_segmenter_run, lesion_masks_dataset, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    image = lesion_masks_dataset / "images" / "L030.jpg"
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["segment", str(image), str(bad), "--out", str(out), "--model",
                                      str(tiny_segmenter_run / "model"), "--quiet", "--mm-per-pixel", "0.05"])
    assert result.exit_code == 1, result.output  # one file failed
    assert "broken.jpg" in result.output
    rows = list(csv.DictReader(open(out / "measurements.csv")))
    assert [r["image"] for r in rows] == [str(image), str(bad)]
    assert rows[0]["error"] == "" and float(rows[0]["area_px"]) >= 0 and rows[0]["longest_diameter_mm"] != ""
    assert "not" in rows[1]["error"] or "image" in rows[1]["error"]
    fraction = Image.open(out / "L030_fraction.png")
    mask = np.asarray(Image.open(out / "L030_mask.png"))
    assert fraction.size == Image.open(image).size and fraction.mode == "L"
    assert set(np.unique(mask)) <= {0, 255}


def test_cli_segment_evaluate_and_train(tiny_segmenter_run, lesion_masks_dataset, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["segment", "evaluate", "--data", str(lesion_masks_dataset), "--split", "test",
                                 "--model", str(tiny_segmenter_run / "model"), "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n"] == 8 and len(metrics["per_image"]) == 8
    low, high = metrics["thresholded_jaccard_ci95"]
    assert low <= metrics["thresholded_jaccard"] <= high
    result = runner.invoke(app, ["segment", "train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "labels.csv" in result.output


def test_cli_segment_names_a_missing_model(tmp_path):
    result = CliRunner().invoke(app, ["segment", "x.jpg", "--out", str(tmp_path), "--model", str(tmp_path / "m")])
    assert result.exit_code == 2 and "not a dermlens segmenter" in result.output
