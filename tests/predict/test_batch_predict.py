"""Batch prediction over folders and CSV lists: worker processes decode, bad files become error rows, rows are
written (and flushed) batch by batch, and ``--resume`` finishes a run that crashed without repeating anything."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dermlens.cli import app
from dermlens.data.torch_dataset import DecodeFailure, TolerantImageDataset, collate_keeping_failures
from dermlens.predict.batch import OutputMismatchError, collect_inputs, predict_files, read_image_list


@pytest.fixture(scope="module")
def archive(tmp_path_factory, synthetic_parts):
    """A folder of 20 good images with 2 bad ones among them, in a sub-folder too."""
    root = tmp_path_factory.mktemp("archive")
    (root / "more").mkdir()
    for k, record in enumerate(synthetic_parts["test"] + synthetic_parts["val"]):
        if k == 20:
            break
        shutil.copy(record.path, root / ("more" if k % 4 == 0 else ".") / f"img{k:02d}.png")
    (root / "img05b.png").write_bytes(b"definitely not a PNG")
    (root / "img11b.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)  # a JPEG cut off after its header
    return root


class Crashing:
    """A predictor that dies (like a killed process) when it reaches batch number ``crash_at``."""

    def __init__(self, predictor, crash_at: int):
        self.predictor, self.crash_at, self.batches = predictor, crash_at, 0

    def __getattr__(self, name):  # everything else (node_ids, transform, the settings a run records) as the real one
        return getattr(self.predictor, name)

    def predict_tensors(self, batch, names, *args, **kwargs):
        self.batches += 1
        if self.batches == self.crash_at:
            raise KeyboardInterrupt("simulated kill")
        return self.predictor.predict_tensors(batch, names, *args, **kwargs)


def _csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_inputs_come_from_folders_files_and_csv_lists(archive, tmp_path):
    files = collect_inputs([archive])
    assert len(files) == 22 and files == sorted(files, key=lambda p: p.relative_to(archive).as_posix())
    listing = tmp_path / "list.csv"
    listing.write_text("patient,image\np1," + str(files[3]) + "\np2,relative/x.png\n")
    assert read_image_list(listing) == [files[3], tmp_path / "relative" / "x.png"]
    headerless = tmp_path / "plain.csv"
    headerless.write_text(f"{files[0]}\n{files[1]}\n")
    assert collect_inputs([headerless, files[2]]) == files[:3]
    bad = tmp_path / "bad.csv"
    bad.write_text("patient,age\np1,40\n")
    with pytest.raises(ValueError, match="no image column"):
        read_image_list(bad)


def test_decoding_failures_travel_back_from_worker_processes_as_data(archive, predictor):
    from torch.utils.data import DataLoader

    files = collect_inputs([archive])
    loader = DataLoader(TolerantImageDataset(files, predictor.transform), batch_size=8, num_workers=2,
                        collate_fn=collate_keeping_failures)
    seen, failed = [], {}
    for batch in loader:
        seen += batch.indices + [i for i, _ in batch.failures]
        failed.update(dict(batch.failures))
        if batch.images is not None:
            assert batch.images.shape[0] == len(batch.indices) == len(batch.shorter_sides)
            assert all(side >= 64 for side in batch.shorter_sides)  # the decoded photo's, not the tensor's
    assert sorted(seen) == list(range(22))
    assert {files[i].name for i in failed} == {"img05b.png", "img11b.jpg"}
    not_png = failed[[f.name for f in files].index("img05b.png")]
    assert isinstance(not_png, DecodeFailure) and not_png.path.endswith("img05b.png")
    assert "not an image file" in not_png.reason and str(not_png) == f"{not_png.path}: {not_png.reason}"


def test_a_batch_of_only_bad_files_has_no_images_and_keeps_every_failure(tmp_path, predictor):
    bad = [tmp_path / "a.png", tmp_path / "missing.jpg"]
    bad[0].write_bytes(b"not a PNG")
    batch = collate_keeping_failures([TolerantImageDataset(bad, predictor.transform)[i] for i in range(2)])
    assert batch.images is None and batch.indices == [] and [i for i, _ in batch.failures] == [0, 1]
    assert batch.failures[1][1].reason == "file not found"


def test_a_transform_that_breaks_on_one_file_marks_that_file_only(archive, tmp_path):
    def picky(image):
        if image.size[0] % 2:
            raise RuntimeError("odd width")
        return torch.zeros(3, 8, 8)

    odd = tmp_path / "odd.png"
    Image.new("RGB", (65, 64)).save(odd)
    dataset = TolerantImageDataset([odd, next(archive.glob("*.png"))], picky)
    _, failure, side = dataset[0]
    assert failure.reason == "cannot process image (RuntimeError: odd width)" and side == 0
    assert dataset[1][1].shape == (3, 8, 8)


@pytest.mark.parametrize("workers", [0, 2])
def test_rows_match_the_predictor_with_errors_in_place(archive, predictor, tmp_path, workers):
    files = collect_inputs([archive])
    out = tmp_path / "predictions.csv"
    summary = predict_files(predictor, files, out, batch_size=5, num_workers=workers, progress=False)
    assert (summary.total, summary.predicted, summary.failed) == (22, 20, 2)
    assert summary.engine == predictor.engine_name
    rows = _csv_rows(out)
    assert [r["image"] for r in rows] == [str(f) for f in files]
    expected = predictor.predict([str(f) for f in files])
    for row, p in zip(rows, expected):
        assert row["error"] == p.error
        if not p.error:
            assert row["triage"] == p.triage and row["top1_class"] == p.top5[0][0]
            assert abs(float(row["p_malignant"]) - p.probabilities["malignant"]) < 1e-6
    assert {r["image"].rsplit("/", 1)[-1] for r in rows if r["error"]} == {"img05b.png", "img11b.jpg"}


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_a_crash_loses_nothing_written_and_resume_finishes_the_job(archive, predictor, tmp_path, fmt):
    files = collect_inputs([archive])
    reference = tmp_path / f"reference.{fmt}"
    predict_files(predictor, files, reference, format=fmt, batch_size=4, num_workers=0, progress=False)

    out = tmp_path / f"predictions.{fmt}"
    with pytest.raises(KeyboardInterrupt):
        predict_files(Crashing(predictor, crash_at=3), files, out, format=fmt, batch_size=4, num_workers=2, progress=False)
    written = out.read_text()
    if fmt == "csv":
        assert len(_csv_rows(out)) == 8  # two whole batches, flushed before the crash
    else:
        assert len(json.loads(written)) == 8  # a valid array of the complete batches, even after the interruption
    # A kill -9 could also cut the next row in half.
    with open(out, "a") as f:
        f.write(("," + "\n" if fmt == "json" else "") + written.splitlines()[-1][:25])

    summary = predict_files(predictor, files, out, format=fmt, batch_size=4, num_workers=2, resume=True, progress=False)
    assert summary.skipped == 8 and summary.predicted + summary.failed == 14
    if fmt == "csv":
        assert _csv_rows(out) == _csv_rows(reference)
    else:
        assert json.loads(out.read_text()) == json.loads(reference.read_text())

    again = predict_files(predictor, files, out, format=fmt, batch_size=4, num_workers=0, resume=True, progress=False)
    assert (again.skipped, again.predicted, again.failed) == (22, 0, 0)
    if fmt == "csv":
        assert _csv_rows(out) == _csv_rows(reference)


def test_resume_refuses_a_file_another_model_wrote(archive, predictor, tmp_path):
    out = tmp_path / "predictions.csv"
    out.write_text("image,error,triage,top1,p_something_else\nx.png,,refer,melanoma,0.5\n")
    with pytest.raises(OutputMismatchError, match="new --out"):
        predict_files(predictor, collect_inputs([archive]), out, resume=True, num_workers=0, progress=False)
    assert out.read_text().startswith("image,error,triage,top1,p_something_else")  # left as it was


def test_cli_predict_with_onnx_engine_workers_and_resume(archive, tiny_model_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["predict", str(archive), "--model", str(tiny_model_dir), "--out", str(out), "--engine", "onnx",
            "--workers", "2", "--batch-size", "8", "--no-progress"]
    first = runner.invoke(app, args)
    assert first.exit_code == 1, first.output  # two unreadable files: reported, not fatal
    assert "img05b.png: not an image file" in first.output
    rows = _csv_rows(out / "predictions.csv")
    assert len(rows) == 22 and sum(bool(r["error"]) for r in rows) == 2
    probs = np.array([[float(r[k]) for k in r if k.startswith("p_")] for r in rows if not r["error"]])
    assert probs.shape[0] == 20 and np.all((probs >= 0) & (probs <= 1 + 1e-6))

    second = runner.invoke(app, args + ["--resume"])
    assert second.exit_code == 1, second.output  # nothing new failed, but the file holds two error rows
    assert "22 already done" in second.output and "2 failed in an earlier run" in second.output
    assert _csv_rows(out / "predictions.csv") == rows

    to_stdout = runner.invoke(app, ["predict", str(archive / "img01.png"), "--model", str(tiny_model_dir),
                                    "--format", "json", "--no-progress", "--tta", "2"])
    assert to_stdout.exit_code == 0, to_stdout.output
    parsed = json.loads(to_stdout.stdout)
    assert len(parsed) == 1 and parsed[0]["image"].endswith("img01.png")


def test_cli_export_writes_onnx_files(tiny_model_dir, synthetic_labels_csv, tmp_path):
    runner = CliRunner()
    refused = runner.invoke(app, ["export", "--model", str(tiny_model_dir), "--int8"])
    assert refused.exit_code != 0 and "calibration-data" in refused.output
    out = tmp_path / "exported"
    done = runner.invoke(app, ["export", "--format", "onnx", "--model", str(tiny_model_dir), "--out", str(out),
                               "--int8", "--calibration-data", str(synthetic_labels_csv.parent / "images"),
                               "--calibration-size", "16"])
    assert done.exit_code == 0, done.output
    assert (out / "model.onnx").is_file() and (out / "model.int8.onnx").is_file()
    assert f"int8: {out / 'model.int8.onnx'}" in done.output
