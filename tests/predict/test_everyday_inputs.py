"""Ordinary ways of calling dermlens that used to go wrong: one path instead of a list, a tta out of range, an
error that named the file twice, and photos with the same file name from different folders (one rule for
``screen`` and ``segment``: x, x-2, x-3...)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dermlens.cli import app
from dermlens.data.io import output_stems


def test_predict_accepts_a_single_path_string_or_path(predictor, image_cases):
    photo = image_cases.good["rgb"][0]
    (from_list,) = predictor.predict([str(photo)])
    for single in (str(photo), photo, photo.read_bytes()):
        results = predictor.predict(single)
        assert len(results) == 1 and not results[0].error, results[:3]
        assert results[0].probabilities == pytest.approx(from_list.probabilities, abs=1e-6)
    assert predictor.predict(str(photo))[0].image == str(photo)
    (missing,) = predictor.predict("no-such-photo.jpg")
    assert "not found" in missing.error


@pytest.mark.parametrize("tta", [0, 9, 100])
def test_a_tta_out_of_range_is_refused_not_clamped(tiny_model_dir, tta):
    from dermlens.predict import Predictor

    with pytest.raises(ValueError, match="tta must be 1-8"):
        Predictor(tiny_model_dir, tta=tta)


def test_explain_names_the_file_once(tiny_model_dir, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    result = CliRunner().invoke(app, ["explain", str(bad), "--model", str(tiny_model_dir), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.stderr.count(str(bad)) == 1, result.stderr


def test_output_stems_one_rule_for_same_named_photos():
    paths = [Path("a/x.jpg"), Path("b/x.jpg"), Path("c/x.png"), Path("d/y.jpg"), Path("e/x-2.jpg")]
    assert output_stems(paths) == ["x", "x-3", "x-4", "y", "x-2"]  # never a name another input already has
    assert len(set(output_stems(paths))) == len(paths)


def test_screen_writes_same_named_photos_side_by_side_as_segment_does(tmp_path):
    from dermlens.segment.batch import _output_stems
    from dermlens.screen.screener import PhotoResult, ScreenConfig, patient_ids, screen_files

    files = [tmp_path / "left" / "lesion.jpg", tmp_path / "right" / "lesion.jpg"]

    class Unreadable:  # every photo fails to decode: screen_files writes its JSON and goes on
        config = ScreenConfig()

        def screen(self, images, patients=None, progress=None):
            results = [PhotoResult(image=image, error="not found") for image in images]
            for result in results:
                progress(result)
            return results

    out = tmp_path / "out"
    summary = screen_files(Unreadable(), files, out, progress=False)
    assert len(summary.failed) == 2
    written = {p.name: json.loads(p.read_text())["image"] for p in out.glob("*.json")}
    assert written == {"lesion.json": str(files[0]), "lesion-2.json": str(files[1])}
    assert _output_stems(files) == ["lesion", "lesion-2"]  # segment's names for the same photos
    assert patient_ids(files, "photo") == ["lesion", "lesion-2"]  # and two patients, not one
