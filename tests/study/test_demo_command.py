"""`dermlens demo` is the main job: exactly `dermlens study --out runs/demo`, as `make demo` runs it."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import dermlens.study.run
from dermlens.cli import app


class Stop(Exception):
    """Raised by the stand-in study once it has seen its arguments."""


@pytest.fixture
def study_calls(monkeypatch) -> list:
    calls = []

    def record(data, out, cfg, **options):
        calls.append((data, Path(out), cfg, options))
        raise Stop

    monkeypatch.setattr(dermlens.study.run, "run_study", record)
    return calls


def test_demo_runs_the_study_with_the_make_demo_arguments(study_calls):
    for command in (["demo"], ["study", "--out", "runs/demo"]):
        result = CliRunner().invoke(app, command)
        assert isinstance(result.exception, Stop), result.output
    demo, study = study_calls
    assert demo == study
    data, out, _, _ = demo
    assert data is None and out == Path("runs/demo")  # the embedded synthetic set


def test_demo_takes_another_output_folder(study_calls, tmp_path):
    CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--quiet"])
    _, out, _, options = study_calls[0]
    assert out == tmp_path and options["progress"] is False
