"""`dermlens predict --backend ray`: the local path's answers from a Ray actor pool, as Parquet; resumable.

One local Ray cluster (2 CPUs) serves the module; each run starts its actors afresh, so the runs are few: one over
60 generated photos and a bad file (answers, bad row), one partial run through the CLI and its resume.
"""
from __future__ import annotations

import csv
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

HAS_RAY = all(importlib.util.find_spec(m) is not None for m in ("ray", "pyarrow"))
needs_ray = pytest.mark.skipif(not HAS_RAY, reason='the [ray] extra is not installed (pip install "dermlens[ray]")')
PHOTOS = 60


def test_nothing_of_ray_is_imported_by_the_cli_or_a_local_prediction(tiny_model_dir, image_cases, tmp_path):
    script = f"""
import sys
from typer.testing import CliRunner
from dermlens.cli import app
result = CliRunner().invoke(app, ["predict", "--model", {str(tiny_model_dir)!r}, "--workers", "0", "--no-progress",
                                  "--out", {str(tmp_path)!r}, {str(image_cases.good["rgb"][0])!r}])
assert result.exit_code == 0, result.output
print(sorted(m for m in sys.modules if m == "ray" or m.startswith("ray.")))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DERMLENS_NO_JEMALLOC": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert (tmp_path / "predictions.csv").is_file()


@pytest.fixture(scope="module")
def ray_cluster():
    if not HAS_RAY:
        pytest.skip('the [ray] extra is not installed (pip install "dermlens[ray]")')
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """60 generated photos (JPEG and PNG, 48-96 px, in two sub-folders) and one file that is not an image."""
    from dermlens.data.synthetic import SYNTHETIC_CLASSES, render_lesion

    root = tmp_path_factory.mktemp("ray-photos")
    rng = np.random.default_rng(7)
    for k in range(PHOTOS):
        image = render_lesion(SYNTHETIC_CLASSES[k % len(SYNTHETIC_CLASSES)], rng, size=int(rng.integers(48, 97)))
        folder = root / ("a" if k % 2 else "b")
        folder.mkdir(exist_ok=True)
        image.save(folder / f"photo{k:03d}.{'jpg' if k % 3 else 'png'}")
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    return root


def files_of(photos: Path) -> list[Path]:
    from dermlens.predict.batch import collect_inputs

    return collect_inputs([photos])


def read_dataset(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(out / "predictions.parquet").to_pylist()


def read_csv(path: Path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {row["image"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def first_run(ray_cluster, photos, tiny_model_dir, tmp_path_factory):
    from dermlens.predict.ray_batch import predict_on_ray

    out = tmp_path_factory.mktemp("ray-out")
    summary = predict_on_ray(files_of(photos), out, model_dir=tiny_model_dir, actors=2, csv=True, progress=False,
                             batch_size=8, photos_per_file=16)
    return out, summary


@needs_ray
def test_ray_gives_the_local_answers_row_for_row(first_run, photos, tiny_model_dir, tmp_path):
    from dermlens.predict import Predictor
    from dermlens.predict.batch import predict_files

    out, summary = first_run
    files = files_of(photos)
    assert summary.total == summary.predicted == PHOTOS + 1 and summary.failed == 1 and summary.actors == 2
    predictor = Predictor(tiny_model_dir, engine="onnx")
    predict_files(predictor, files, tmp_path / "local.csv", num_workers=0, progress=False)
    local = read_csv(tmp_path / "local.csv")
    on_ray = read_csv(out / "predictions.csv")
    assert on_ray == local  # the same CSV, cell for cell (row order aside)

    rows = {row["image"]: row for row in read_dataset(out)}
    assert sorted(rows) == sorted(map(str, files))  # one row per photo
    reference = {p.image: p for p in predictor.predict([str(f) for f in files])}
    worst = 0.0
    for image, row in rows.items():
        if row["error"]:
            continue
        expected = reference[image]
        assert (row["triage"], row["quality"], row["modality"]) == (expected.triage, expected.quality, expected.modality)
        assert row["ood_score"] == pytest.approx(expected.ood_score, abs=1e-9)
        worst = max(worst, max(abs(row[f"p_{node}"] - p) for node, p in expected.probabilities.items()))
    assert worst <= 1e-6  # float64 in Parquet; ONNX fp32 on the same inputs (bitwise here so far)


@needs_ray
def test_a_bad_photo_is_a_row_with_its_error(first_run, photos):
    out, _ = first_run
    [bad] = [row for row in read_dataset(out) if row["error"]]
    assert bad["image"] == str(photos / "b" / "broken.jpg")
    assert "corrupt" in bad["error"] or "not an image" in bad["error"]
    assert bad["triage"] == "" and bad["p_root"] is None and len(bad["content_sha256"]) == 64


@needs_ray
def test_results_are_not_added_to_or_mixed_with_other_settings(first_run, photos, tiny_model_dir):
    from dermlens.predict.batch import OutputMismatchError
    from dermlens.predict.ray_batch import predict_on_ray

    out, _ = first_run
    files = files_of(photos)
    with pytest.raises(FileExistsError, match="--resume"):
        predict_on_ray(files, out, model_dir=tiny_model_dir, progress=False)
    with pytest.raises(OutputMismatchError) as refused:
        predict_on_ray(files, out, model_dir=tiny_model_dir, resume=True, tta=2, gate=False, progress=False)
    assert "tta: 1 -> 2" in str(refused.value) and "gate on: True -> False" in str(refused.value)
    assert "engine" not in str(refused.value)  # only what changed is named
    assert len(read_dataset(out)) == PHOTOS + 1  # nothing was touched


@needs_ray
def test_a_partial_run_resumes_without_doing_anything_twice(ray_cluster, photos, tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from dermlens.cli import app
    from dermlens.predict.ray_batch import predict_on_ray

    import shutil

    photos = Path(shutil.copytree(photos, tmp_path / "photos"))  # one of them is edited below
    files = files_of(photos)
    listed = tmp_path / "first.csv"  # the first part as a CSV list, the local path's input form
    missing = tmp_path / "gone.jpg"  # unreadable: an error row without a content hash, kept as done
    files.append(missing)
    listed.write_text("image\n" + "".join(f"{f}\n" for f in [*files[:24], missing]))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["predict", str(listed), "--backend", "ray", "--out", str(out), "--model",
                                      str(tiny_model_dir), "--actors", "1", "--no-progress"])
    assert result.exit_code == 1, result.output  # the unreadable file's error row, as the local path
    assert "25 photos, 25 predicted" in result.output and "photos/s" in result.output
    first = read_dataset(out)
    assert len(first) == 25

    (out / "predictions.parquet" / ".part-killed.parquet.tmp").write_bytes(b"PAR1 cut off")  # a killed writer's
    changed = files[3]  # a photo edited after its row was written: a new content hash, so predicted again
    changed.write_bytes(files[40].read_bytes())
    summary = predict_on_ray(files, out, model_dir=tiny_model_dir, resume=True, actors=1, progress=False,
                             photos_per_file=16)
    assert summary.predicted == PHOTOS + 1 - 24 + 1 and summary.skipped == 24  # the rest, and the edited photo
    rows = read_dataset(out)
    keys = [(row["image"], row["content_sha256"]) for row in rows]
    assert len(keys) == len(set(keys)) == PHOTOS + 3  # each (photo, content) once; the edited photo twice
    assert {row["image"] for row in rows} == set(map(str, files))
    assert [row["error"] for row in rows if row["image"] == str(missing)] == ["file not found"]
    assert not list((out / "predictions.parquet").glob(".*.tmp"))
    after_edit = [row for row in rows if row["image"] == str(changed)]
    assert len({row["content_sha256"] for row in after_edit}) == 2 and all(row["p_root"] for row in after_edit)


@needs_ray
@pytest.mark.slow
def test_a_killed_run_resumes_to_one_row_per_photo(ray_cluster, photos, tiny_model_dir, tmp_path):
    from dermlens.predict.ray_batch import predict_on_ray

    out = tmp_path / "out"
    script = (f"import sys; from pathlib import Path; from dermlens.predict.batch import collect_inputs; "
              f"from dermlens.predict.ray_batch import predict_on_ray; "
              f"predict_on_ray(collect_inputs([{str(photos)!r}]), Path({str(out)!r}), model_dir={str(tiny_model_dir)!r}, "
              f"address={ray_cluster.get_runtime_context().gcs_address!r}, actors=1, batch_size=4, photos_per_file=4, "
              f"progress=False)")
    driver = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    parts = out / "predictions.parquet"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(parts.glob("*.parquet"))) < 2 and driver.poll() is None:
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    written = len(read_dataset(out))
    assert 0 < written < PHOTOS + 1, "the run should have been killed part-way"
    summary = predict_on_ray(files_of(photos), out, model_dir=tiny_model_dir, resume=True, actors=1, progress=False)
    assert summary.skipped >= written
    rows = read_dataset(out)
    assert sorted(row["image"] for row in rows) == sorted(map(str, files_of(photos)))  # each photo exactly once
