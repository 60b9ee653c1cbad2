"""`dermlens predict --out`: an existing result is never lost to a mistake, a resume describes the whole file,
failed rows can be retried, a JSON result is valid after every batch and after Ctrl-C, empty input is an error."""
from __future__ import annotations

import csv
import json
import os

import pytest
from typer.testing import CliRunner

from dermlens.cli import app
from dermlens.predict.batch import EmptyInputError, collect_inputs, predict_files


@pytest.fixture()
def photos(tmp_path, image_cases):
    """A folder of 5 good photos and 1 that is not an image."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(5):
        (folder / f"p{k}.png").write_bytes(image_cases.good["rgb"][0].read_bytes())
    (folder / "p5.png").write_bytes(b"not a photo")
    return folder


def run(model_dir, *args):
    return CliRunner().invoke(app, ["predict", "--model", str(model_dir), "--workers", "0", "--no-progress",
                                    *map(str, args)])


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class Interrupted:
    """A predictor that is stopped by Ctrl-C when it reaches batch number ``at``."""

    def __init__(self, predictor, at: int):
        self.predictor, self.at, self.batches = predictor, at, 0

    def __getattr__(self, name):  # everything else (node_ids, transform, the settings a run records) as the real one
        return getattr(self.predictor, name)

    def predict_tensors(self, batch, names, *args, **kwargs):
        self.batches += 1
        if self.batches == self.at:
            raise KeyboardInterrupt
        return self.predictor.predict_tensors(batch, names, *args, **kwargs)


def test_an_existing_result_is_refused_without_overwrite_and_a_bad_option_touches_nothing(tiny_model_dir, photos, tmp_path):
    out = tmp_path / "out"
    assert run(tiny_model_dir, photos, "--out", out).exit_code == 1  # one bad photo
    before = (out / "predictions.csv").read_bytes()
    assert len(rows(out / "predictions.csv")) == 6

    again = run(tiny_model_dir, photos, "--out", out)
    assert again.exit_code == 2 and "--overwrite" in again.stderr and "--resume" in again.stderr
    for bad_option in (["--batch-size", "0"], ["--workers", "-1"], ["--tta", "100"], ["--format", "xml"],
                       ["--modality", "x-ray"], ["--overwrite", "--batch-size", "0"]):
        result = run(tiny_model_dir, photos, "--out", out, *bad_option)
        assert result.exit_code == 2, bad_option
    assert (out / "predictions.csv").read_bytes() == before  # every mistake above left the result as it was

    replaced = run(tiny_model_dir, photos / "p0.png", "--out", out, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert [r["image"] for r in rows(out / "predictions.csv")] == [str(photos / "p0.png")]


def test_the_library_refuses_to_replace_a_result_too(predictor, photos, tmp_path):
    out = tmp_path / "predictions.csv"
    out.write_text("earlier results\n")
    with pytest.raises(FileExistsError, match="--overwrite"):
        predict_files(predictor, [photos / "p0.png"], out, num_workers=0, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        predict_files(predictor, [photos / "p0.png"], out, batch_size=0, num_workers=0, progress=False, overwrite=True)
    assert out.read_text() == "earlier results\n"


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_resume_counts_earlier_failures_and_retry_failed_predicts_them_again(tiny_model_dir, photos, tmp_path,
                                                                           image_cases, fmt):
    out = tmp_path / "out"
    target = out / f"predictions.{fmt}"
    first = run(tiny_model_dir, photos, "--out", out, "--format", fmt)
    assert first.exit_code == 1

    resumed = run(tiny_model_dir, photos, "--out", out, "--format", fmt, "--resume")
    assert resumed.exit_code == 1, resumed.output  # the file still holds an error row
    assert "6 already done" in resumed.stderr and "1 failed in an earlier run" in resumed.stderr

    (photos / "p5.png").write_bytes(image_cases.good["rgba"][0].read_bytes())  # the user fixes the bad photo
    retried = run(tiny_model_dir, photos, "--out", out, "--format", fmt, "--retry-failed")
    assert retried.exit_code == 0, retried.output
    assert "5 already done, 0 failed" in retried.stderr
    items = rows(target) if fmt == "csv" else json.loads(target.read_text())
    assert sorted(item["image"] for item in items) == sorted(str(photos / f"p{k}.png") for k in range(6))  # once each
    assert all(not item["error"] and item["triage"] in ("refer", "reassure") for item in items)

    assert run(tiny_model_dir, photos, "--out", out, "--format", fmt, "--resume").exit_code == 0  # all good now


def test_json_is_valid_after_every_batch_and_after_ctrl_c(predictor, photos, tmp_path):
    files = collect_inputs([photos])
    out = tmp_path / "predictions.json"
    with pytest.raises(KeyboardInterrupt):
        predict_files(Interrupted(predictor, at=3), files, out, format="json", batch_size=2, num_workers=0,
                      progress=False)
    items = json.loads(out.read_text())  # valid JSON: the two complete batches
    assert [item["image"] for item in items] == [str(f) for f in files[:4]]

    summary = predict_files(predictor, files, out, format="json", batch_size=2, num_workers=0, resume=True,
                            progress=False)
    assert (summary.skipped, summary.predicted, summary.failed) == (4, 1, 1)
    assert [item["image"] for item in json.loads(out.read_text())] == [str(f) for f in files]


def test_a_json_file_is_a_valid_array_at_every_batch_boundary(predictor, photos, tmp_path):
    out = tmp_path / "predictions.json"
    seen = []

    class Watching(Interrupted):
        def predict_tensors(self, batch, names, *args, **kwargs):
            seen.append(len(json.loads(out.read_text())))  # what a reader finds while the next batch is computed
            return self.predictor.predict_tensors(batch, names, *args, **kwargs)

    predict_files(Watching(predictor, at=0), collect_inputs([photos]), out, format="json", batch_size=2,
                  num_workers=0, progress=False)
    assert seen == [0, 2, 4]
    assert len(json.loads(out.read_text())) == 6


def test_csv_interrupted_mid_batch_keeps_only_complete_batches(predictor, photos, tmp_path):
    out = tmp_path / "predictions.csv"
    with pytest.raises(KeyboardInterrupt):
        predict_files(Interrupted(predictor, at=2), collect_inputs([photos]), out, batch_size=3, num_workers=0,
                      progress=False)
    assert len(rows(out)) == 3


def test_empty_input_is_an_error_not_a_header_only_file(tiny_model_dir, tmp_path, photos):
    empty_folder = tmp_path / "empty"
    (empty_folder / "sub").mkdir(parents=True)
    (empty_folder / "notes.txt").write_text("no photos here")
    empty_list = tmp_path / "list.csv"
    empty_list.write_text("image\n")
    for given in (empty_folder, empty_list):
        out = tmp_path / f"out-{given.name}"
        result = run(tiny_model_dir, given, "--out", out)
        assert result.exit_code == 2 and str(given) in result.stderr and "no images" in result.stderr
        assert not (out / "predictions.csv").exists()
    with pytest.raises(EmptyInputError):
        collect_inputs([empty_folder, empty_list])
    warnings = []
    assert len(collect_inputs([empty_folder, photos], on_empty=warnings.append)) == 6  # the rest goes on, with a word
    assert len(warnings) == 1 and str(empty_folder) in warnings[0]


def test_symlinked_sub_folders_are_followed_once_even_in_a_loop(tmp_path, image_cases):
    root = tmp_path / "archive"
    (root / "real").mkdir(parents=True)
    (root / "real" / "a.png").write_bytes(image_cases.good["rgb"][0].read_bytes())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "b.png").write_bytes(image_cases.good["rgb"][0].read_bytes())
    os.symlink(elsewhere, root / "linked")
    os.symlink(root, root / "real" / "loop")  # a link back up: must not recurse forever
    found = collect_inputs([root])
    assert found == [root / "linked" / "b.png", root / "real" / "a.png"]
