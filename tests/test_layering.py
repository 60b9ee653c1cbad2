"""The house's floor plan: every import inside dermlens points down the way an image travels, never up or sideways.

A package may import from itself and from any package below it in ``LAYERS``; ``serve``, ``screen`` and ``study``
are siblings that know nothing of each other, as are ``segment`` and ``pet`` apart from the tissue-fraction maths
that PET borrows from ``segment``. Function-level imports count too: a lazy import is still an arrow.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dermlens"

# Lowest first. Utilities with no dermlens imports of their own sit at the bottom.
LAYERS = [
    {"extras", "runtime"},
    {"taxonomy"},
    {"data"},
    {"models"},
    {"evaluate"},
    {"gate"},
    {"train"},
    {"deploy"},
    {"predict"},
    {"explain"},
    {"report"},
    {"segment"},
    {"pet"},
    {"study", "screen"},
    {"serve"},
    {"cli"},
    {"__main__"},
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def package_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def dermlens_imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level dermlens package) for every import of dermlens code in a file, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "dermlens" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
            elif parts == ["dermlens"] and isinstance(node, ast.ImportFrom):
                found += [(node.lineno, alias.name) for alias in node.names]
    return found


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_every_package_has_a_floor():
    packages = {package_of(p) for p in SOURCES}
    assert packages <= set(LEVEL), f"packages without a layer in this test: {sorted(packages - set(LEVEL))}"


def upward_imports(path: Path, here: str) -> list[str]:
    return [
        f"{path.name}:{line} imports dermlens.{target}"
        for line, target in dermlens_imports(path)
        if target != here and target in LEVEL and LEVEL[target] >= LEVEL[here]
    ]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    upward = upward_imports(path, package_of(path))
    assert not upward, f"{path.relative_to(PACKAGE)}: imports that point up or sideways:\n" + "\n".join(upward)


def test_the_rule_reports_an_upward_lazy_import(tmp_path):
    module = tmp_path / "records.py"
    module.write_text("from dermlens.taxonomy import Taxonomy\n\ndef later():\n    from dermlens.predict import Predictor\n")
    assert upward_imports(module, "data") == ["records.py:4 imports dermlens.predict"]
    assert upward_imports(module, "serve") == []
