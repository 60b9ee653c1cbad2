"""Everyday mistakes get ONE line naming the option and the problem, exit code 2 -- never a traceback.
``--debug`` (or DERMLENS_DEBUG=1) shows the traceback for bug reports."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from dermlens.cli import app

MISSING = "/nonexistent/dermlens-data"


def one_line_error(result, *words) -> str:
    """The whole of stderr is one line holding every word; no traceback anywhere; exit code 2."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("command, option", [
    (["evaluate", "--data", MISSING], "--data"),
    (["study", "--data", MISSING], "--data"),
    (["taxonomy", "partition", "--data", MISSING], "--data"),
    (["operating-point", "--data", MISSING], "--data"),
    (["pet", "train", "--data", MISSING, "--out", "unused"], "--data"),
    (["train", "--data", MISSING, "--out", "unused"], "--data"),
    (["report", "--study", MISSING], "--study"),
])
def test_a_missing_dataset_or_study_is_one_line_naming_the_option(command, option):
    result = CliRunner().invoke(app, command)
    one_line_error(result, option, MISSING, "does not exist")


@pytest.mark.parametrize("option, value, words", [
    ("--batch-size", "0", ["--batch-size", "greater than or equal to 1"]),
    ("--workers", "-1", ["--workers", "greater than or equal to 0"]),
    ("--tta", "0", ["--tta", "greater than or equal to 1"]),
    ("--tta", "100", ["--tta", "less than or equal to 8"]),
])
def test_predict_option_out_of_range_is_one_line(option, value, words, tmp_path):
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "x.jpg"), option, value])
    one_line_error(result, *words)


@pytest.mark.parametrize("command", [["evaluate", "--data", "."], ["serve"]])
def test_tta_is_checked_wherever_it_is_taken(command):
    one_line_error(CliRunner().invoke(app, [*command, "--tta", "100"]), "--tta", "less than or equal to 8")


def test_predict_out_naming_a_file_is_one_line_and_leaves_the_file_alone(tmp_path):
    taken = tmp_path / "results.csv"
    taken.write_text("precious\n")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "x.jpg"), "--out", str(taken)])
    one_line_error(result, "--out", str(taken), "is a file")
    assert taken.read_text() == "precious\n"


def test_an_error_dermlens_raises_is_one_line_with_its_message(tmp_path):
    (tmp_path / "notes.txt").write_text("not a dataset")
    result = CliRunner().invoke(app, ["taxonomy", "partition", "--data", str(tmp_path)])
    line = one_line_error(result, str(tmp_path))
    assert "taxonomy: error: " in line


def test_debug_flag_and_environment_variable_show_the_traceback(tmp_path):
    (tmp_path / "notes.txt").write_text("not a dataset")
    command = ["taxonomy", "partition", "--data", str(tmp_path)]
    plain = CliRunner().invoke(app, command)
    assert isinstance(plain.exception, SystemExit)
    flagged = CliRunner().invoke(app, ["--debug", *command])
    assert flagged.exception is not None and not isinstance(flagged.exception, SystemExit)  # the real error
    assert str(tmp_path) in str(flagged.exception)
    via_env = CliRunner().invoke(app, command, env={"DERMLENS_DEBUG": "1"})
    assert type(via_env.exception) is type(flagged.exception)
    # As a user runs it: the traceback is printed.
    env = {**os.environ, "DERMLENS_DEBUG": "1", "OMP_NUM_THREADS": "1"}
    shown = subprocess.run([sys.executable, "-m", "dermlens", *command], capture_output=True, text=True, env=env,
                           timeout=120)
    assert shown.returncode not in (0, 2) and "Traceback" in shown.stderr


def test_a_bug_keeps_its_traceback(monkeypatch):
    """An error dermlens did not raise on purpose is a bug: it is not dressed up as a user's mistake."""
    import dermlens.taxonomy

    def broken():
        return {}["missing key"]

    monkeypatch.setattr(dermlens.taxonomy, "default_taxonomy", broken)
    result = CliRunner().invoke(app, ["taxonomy", "show"])
    assert isinstance(result.exception, KeyError)


@pytest.mark.parametrize("command", [["taxonomy", "partition"], ["evaluate"], ["operating-point"]])
def test_a_split_the_dataset_lacks_is_one_line_naming_the_dataset(command, synthetic_labels_csv):
    result = CliRunner().invoke(app, [*command, "--data", str(synthetic_labels_csv), "--split", "tset"])
    one_line_error(result, str(synthetic_labels_csv), "no records in split 'tset'", "no fixed split")


def test_a_model_without_a_card_is_one_line(tmp_path):
    one_line_error(CliRunner().invoke(app, ["model-card", "--model", str(tmp_path)]), "MODEL_CARD.md", "no model card")


@pytest.mark.parametrize("command, folder_option, existing", [
    (["gate", "fit"], "--model", "gate.safetensors"),
    (["screen", "train-head", "--benchmark", "bench"], "--out", "lesion_head.safetensors"),
])
def test_a_fit_into_a_folder_that_holds_one_is_refused_without_overwrite(command, folder_option, existing, tmp_path):
    (tmp_path / existing).write_bytes(b"the fit a user already has")
    refused = CliRunner().invoke(app, [*command, folder_option, str(tmp_path)])
    one_line_error(refused, str(tmp_path), "--overwrite")
    assert (tmp_path / existing).read_bytes() == b"the fit a user already has"
    allowed = CliRunner().invoke(app, [*command, folder_option, str(tmp_path), "--overwrite"])
    assert "--overwrite" not in allowed.stderr  # it went on, to fail later on this empty folder
