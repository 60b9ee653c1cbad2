"""The screening benchmark's generator lives in the repository's benchmarks/ folder, outside the package; its
tests import it from there as the scripts import each other (a script's folder is on sys.path)."""
from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))
