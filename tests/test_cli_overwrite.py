"""No command replaces earlier results unasked: every command that writes into ``--out`` refuses, in one line and
before loading anything, when the folder already holds its results, unless ``--overwrite`` is given (``predict``'s
own refusal and ``--resume`` are tested in tests/deploy/test_results_never_lost.py; the trainers' in their
packages)."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dermlens.cli import app

# (command before --out, a file its earlier run left in --out)
WRITERS = [
    (["screen", "back.jpg"], "back.json"),
    (["study"], "report.html"),
    (["study"], "metrics.json"),
    (["demo"], "report.html"),
    (["evaluate", "--data", "{tmp}"], "metrics.json"),
    (["export"], "model.onnx"),
    (["operating-point", "--data", "{tmp}"], "config.json"),
    (["explain", "lesion.jpg"], "lesion-explanation.json"),
    (["segment", "lesion.jpg"], "measurements.csv"),
    (["segment", "evaluate", "--data", "{tmp}"], "metrics.json"),
    (["pet", "simulate"], "images.npy"),
    (["pet", "evaluate"], "metrics.json"),
]


@pytest.mark.parametrize("command, earlier", WRITERS, ids=lambda x: " ".join(x) if isinstance(x, list) else x)
def test_earlier_results_in_out_are_refused_without_overwrite(command, earlier, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / earlier).write_text("earlier results")
    args = [part.format(tmp=tmp_path) for part in command] + ["--out", str(out)]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2, refused.output
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--overwrite" in lines[0] and earlier in lines[0] and "--out" in lines[0], refused.stderr
    assert (out / earlier).read_text() == "earlier results"
    assert sorted(p.name for p in out.iterdir()) == [earlier]  # nothing else written either


@pytest.mark.parametrize("command, earlier", WRITERS[:1] + WRITERS[4:5], ids=lambda x: " ".join(x) if isinstance(x, list) else x)
def test_overwrite_lets_the_command_go_on(command, earlier, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / earlier).write_text("earlier results")
    args = [part.format(tmp=tmp_path) for part in command] + ["--out", str(out), "--overwrite"]
    result = CliRunner().invoke(app, args)
    assert "already holds results" not in result.output  # it went on (and failed later on the made-up inputs)


def test_an_empty_or_unrelated_out_folder_is_fine(tmp_path):
    from dermlens.cli.common import refuse_to_replace

    (tmp_path / "notes.txt").write_text("mine")
    refuse_to_replace(tmp_path, ["metrics.json", "*.annotated.jpg"], overwrite=False)
    refuse_to_replace(tmp_path / "not-yet", ["metrics.json"], overwrite=False)
    refuse_to_replace(None, ["metrics.json"], overwrite=False)
