"""Options are checked before anything heavy loads: a wrong option is told without importing torch (the time
figures are printed by benchmarks/startup.py, never asserted here)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
from typer.testing import CliRunner
from dermlens.cli import app
result = CliRunner().invoke(app, json.loads(sys.argv[1]))
heavy = sorted(m for m in ("torch", "torchvision", "timm", "onnxruntime", "sklearn", "cv2") if m in sys.modules)
print(json.dumps({"exit_code": result.exit_code, "heavy": heavy, "output": result.output}))
"""


def run_isolated(args: list[str]) -> dict:
    """The command in a fresh interpreter, so that what it imported can be seen."""
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args, option", [
    (["predict", "x.jpg", "--format", "xml"], "--format"),
    (["predict", "x.jpg", "--modality", "x-ray"], "--modality"),
    (["predict", "x.jpg", "--engine", "tensorrt"], "--engine"),
    (["predict", "x.jpg", "--engine", "onnx", "--precision", "bf16"], "--precision"),
    (["predict", "x.jpg", "--resume"], "--resume"),
    (["predict", "x.jpg", "--tta", "100"], "--tta"),
    (["train", "--data", ".", "--out", "x", "--resume", "--overwrite"], "--overwrite"),
    (["export", "--format", "tflite"], "--format"),
    (["serve", "--ssl-keyfile", __file__], "--ssl-certfile"),
])
def test_a_wrong_option_is_told_before_torch_loads(args, option):
    result = run_isolated(args)
    assert result["exit_code"] == 2 and option in result["output"], result
    assert result["heavy"] == [], f"{args} imported {result['heavy']} before checking its options"


def test_the_cli_s_engine_table_is_the_engines_own():
    from dermlens.cli.classify import ENGINE_PRECISIONS
    from dermlens.predict.engines import PRECISIONS

    assert ENGINE_PRECISIONS == PRECISIONS
