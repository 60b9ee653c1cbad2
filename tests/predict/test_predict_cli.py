"""`dermlens predict`: one CSV row (or JSON object) per input file, errors in their cell, exit code 1 on any failure."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from dermlens.cli import app
from dermlens.taxonomy import default_taxonomy

NODES = list(default_taxonomy())


def run_predict(model_dir, *args):
    # In this process, without loader workers: quick, and what a failure looks like is easy to see.
    options = ["--model", str(model_dir), "--workers", "0", "--no-progress"]
    result = CliRunner().invoke(app, ["predict", *options, *map(str, args)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def read_rows(text: str) -> tuple[list[str], list[dict]]:
    reader = csv.DictReader(io.StringIO(text))
    rows = list(reader)
    return reader.fieldnames, rows


def node_probs(row: dict) -> np.ndarray:
    return np.array([float(row[f"p_{n}"]) for n in NODES])


def assert_good_row(row: dict) -> None:
    assert row["error"] == ""
    assert row["triage"] in ("refer", "reassure")
    p = node_probs(row)
    assert p[0] == pytest.approx(1.0, abs=2e-6)  # the root
    assert ((p >= 0) & (p <= 1)).all()


def test_csv_has_one_row_per_file_and_the_specified_columns(tiny_model_dir, image_cases):
    files = [image_cases.good["rgb"][0], image_cases.good["grayscale"][0], image_cases.good["exif_rotated_90"][0]]
    result = run_predict(tiny_model_dir, *files)
    assert result.exit_code == 0, result.output
    fields, rows = read_rows(result.stdout)
    assert fields[:3] == ["image", "error", "triage"]
    assert [f for f in fields if f.startswith("p_")] == [f"p_{n}" for n in NODES]  # every node, in tree order
    assert [row["image"] for row in rows] == [str(f) for f in files]
    for row in rows:
        assert_good_row(row)
        p = dict(zip(NODES, node_probs(row)))
        assert p["benign"] + p["malignant"] + p["non_neoplastic"] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("case", ["empty", "truncated", "corrupt", "not_an_image", "over_100_megapixels", "missing"])
def test_a_bad_file_gets_an_error_cell_the_batch_goes_on_and_the_exit_code_is_1(tiny_model_dir, image_cases, case):
    bad, words = image_cases.bad[case]
    good = image_cases.good["rgb"][0]
    other = image_cases.good["cmyk_tiff"][0]
    result = run_predict(tiny_model_dir, good, bad, other)
    assert result.exit_code == 1
    _, rows = read_rows(result.stdout)
    assert [row["image"] for row in rows] == [str(good), str(bad), str(other)]
    failed = rows[1]
    for word in words:
        assert word in failed["error"]
    assert failed["triage"] == "" and all(failed[f"p_{n}"] == "" for n in NODES)
    assert_good_row(rows[0])
    assert_good_row(rows[2])
    assert str(bad) in result.stderr and words[0] in result.stderr  # told on stderr as well


def test_every_bad_file_in_one_batch(tiny_model_dir, image_cases, tmp_path):
    source = image_cases.good["rgb"][0].read_bytes()
    files = [tmp_path / "good-0.png"]
    for k, (bad, _) in enumerate(image_cases.bad.values(), start=1):
        files += [bad, tmp_path / f"good-{k}.png"]  # distinct names: a file given twice is predicted once
    for good in files[::2]:
        good.write_bytes(source)
    result = run_predict(tiny_model_dir, "--batch-size", "3", *files)
    assert result.exit_code == 1
    _, rows = read_rows(result.stdout)
    assert [row["image"] for row in rows] == [str(f) for f in files]
    assert sum(bool(row["error"]) for row in rows) == len(image_cases.bad)
    reference = node_probs(rows[0])
    for row in rows[::2]:
        assert_good_row(row)
        np.testing.assert_allclose(node_probs(row), reference, atol=2e-6)


def test_any_mode_or_orientation_is_classified_like_its_rgb_upright_equivalent(tiny_model_dir, image_cases):
    cases = [c for c in image_cases.good if c != "rgb"]
    files = [f for c in cases for f in image_cases.good[c][:2]]  # variant, equivalent, variant, equivalent...
    result = run_predict(tiny_model_dir, *files)
    assert result.exit_code == 0, result.stderr
    _, rows = read_rows(result.stdout)
    by_image = {row["image"]: row for row in rows}
    for case in cases:
        variant, equivalent, tolerance = image_cases.good[case]
        a, b = by_image[str(variant)], by_image[str(equivalent)]
        assert_good_row(a)
        np.testing.assert_allclose(node_probs(a), node_probs(b), atol=max(tolerance, 2e-6), err_msg=case)
        assert a["triage"] == b["triage"], case


def test_json_output_lists_the_same_fields_with_probabilities_nested(tiny_model_dir, image_cases):
    good = image_cases.good["rgb"][0]
    bad = image_cases.bad["not_an_image"][0]
    csv_result = run_predict(tiny_model_dir, good)
    result = run_predict(tiny_model_dir, "--format", "json", good, bad)
    assert result.exit_code == 1
    items = json.loads(result.stdout)
    assert isinstance(items, list) and len(items) == 2
    ok, failed = items
    assert {"image", "error", "triage", "probabilities"} <= set(ok)
    assert ok["image"] == str(good) and ok["error"] == "" and ok["triage"] in ("refer", "reassure")
    assert list(ok["probabilities"]) == NODES
    _, (csv_row,) = read_rows(csv_result.stdout)
    np.testing.assert_allclose([ok["probabilities"][n] for n in NODES], node_probs(csv_row), atol=1e-6)
    assert ok["triage"] == csv_row["triage"]
    assert len(ok["top5"]) == 5 and all(set(t) == {"node", "probability"} for t in ok["top5"])
    assert failed["image"] == str(bad) and "not an image" in failed["error"] and failed["triage"] == ""
    assert not failed["probabilities"]


def test_out_folder_and_folder_inputs(tiny_model_dir, image_cases, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes(image_cases.good["rgb"][0].read_bytes())
    (folder / "nested").mkdir()
    (folder / "nested" / "b.png").write_bytes(image_cases.good["rgba"][0].read_bytes())
    (folder / "notes.txt").write_text("not a photo: skipped when a folder is expanded")
    out = tmp_path / "out"
    result = run_predict(tiny_model_dir, "--out", out, folder)
    assert result.exit_code == 0, result.output
    assert "image,error" not in result.stdout  # the table went to the file
    _, rows = read_rows((out / "predictions.csv").read_text())
    assert [row["image"] for row in rows] == [str(folder / "a.png"), str(folder / "nested" / "b.png")]
    for row in rows:
        assert_good_row(row)


def test_usage_errors(tiny_model_dir, image_cases, tmp_path):
    good = image_cases.good["rgb"][0]
    assert run_predict(tiny_model_dir, "--format", "xml", good).exit_code == 2
    missing_model = CliRunner().invoke(app, ["predict", "--model", str(tmp_path / "none"), "--workers", "0", str(good)])
    assert missing_model.exit_code not in (0, 1)  # not a per-file failure: nothing was predicted
    assert "config.json" in missing_model.output
    assert not isinstance(missing_model.exception, FileNotFoundError)  # a message, not a traceback


def test_an_archive_file_is_refused_saying_which_archives_work(tmp_path):
    """The README's "archive" is a folder of photos; a .zip or .tar.gz is refused in one line that says so (it used
    to be one error row "not an image file")."""
    import tarfile
    import zipfile

    from PIL import Image
    from typer.testing import CliRunner

    from dermlens.cli import app

    photo = tmp_path / "p.png"
    Image.new("RGB", (32, 32)).save(photo)
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as z:
        z.write(photo, "p.png")
    with tarfile.open(tmp_path / "photos.tar.gz", "w:gz") as t:
        t.add(photo, "p.png")
    for archive in ("photos.zip", "photos.tar.gz"):
        result = CliRunner().invoke(app, ["predict", str(tmp_path / archive), "--no-progress", "--workers", "0"])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and archive in lines[0] and "folder" in lines[0] and "unpack" in lines[0], lines
