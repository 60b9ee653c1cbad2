"""Optional features are pip extras: a missing one is ONE error naming the extra that installs it, and the extras
in pyproject.toml name exactly the packages the code imports."""
from __future__ import annotations

import ast
import importlib
import re
import sys
import tomllib
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dermlens.extras import MissingExtraError, require

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "dermlens"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
NOT_RUNTIME = {"test", "all"}  # extras that are not a feature of their own


def distribution_name(requirement: str) -> str:
    """'fastapi-offline>=1.7' -> 'fastapi-offline' (PEP 503 normalised; an extra or a version is dropped)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def uninstalled(monkeypatch, module: str, *dermlens_packages: str) -> None:
    """Make ``import module`` fail as if it were not installed, and make the given dermlens packages import afresh."""
    monkeypatch.setitem(sys.modules, module, None)  # None in sys.modules: the import raises ImportError
    for name in [n for n in sys.modules if any(n == p or n.startswith(p + ".") for p in dermlens_packages)]:
        monkeypatch.delitem(sys.modules, name)


# -------------------------------------------------------------------------------------------------------------
# The error
# -------------------------------------------------------------------------------------------------------------


def test_a_missing_module_is_one_error_naming_the_extra(monkeypatch):
    uninstalled(monkeypatch, "cv2")
    with pytest.raises(MissingExtraError) as caught:
        require("cv2", "screen", "dermlens screen")
    assert str(caught.value) == 'dermlens screen needs cv2: pip install "dermlens[screen]"'
    assert isinstance(caught.value, ImportError)  # code that already catches ImportError keeps working
    assert isinstance(caught.value.__cause__, ImportError)  # the original failure stays in the traceback


def test_an_installed_module_is_returned():
    assert require("json", "unused", "anything") is importlib.import_module("json")


@pytest.mark.filterwarnings("ignore:Please use `import python_multipart`:PendingDeprecationWarning")  # starlette's fallback
@pytest.mark.parametrize("module, dermlens_module, extra", [
    ("fastapi", "dermlens.serve", "serve"),
    ("python_multipart", "dermlens.serve", "serve"),
    ("uvicorn", "dermlens.serve", "serve"),
    ("cv2", "dermlens.screen", "screen"),
    ("cv2", "dermlens.screen.screener", "screen"),  # any module of the package: the package checks first
])
def test_importing_an_optional_feature_without_its_extra_names_the_extra(monkeypatch, module, dermlens_module, extra):
    uninstalled(monkeypatch, module, ".".join(dermlens_module.split(".")[:2]))
    with pytest.raises(MissingExtraError, match=re.escape(f'needs {module}: pip install "dermlens[{extra}]"')):
        importlib.import_module(dermlens_module)


@pytest.mark.parametrize("module, call", [
    ("onnx", lambda onnx_export: onnx_export.read_metadata("model.onnx")),
    ("onnxruntime", lambda onnx_export: onnx_export.session_options()),
])
def test_onnx_without_the_deploy_extra_names_it(monkeypatch, module, call):
    from dermlens.deploy import onnx_export  # the module imports without onnx; the functions that need it ask

    uninstalled(monkeypatch, module)
    with pytest.raises(MissingExtraError, match=re.escape(f'needs {module}: pip install "dermlens[deploy]"')):
        call(onnx_export)


@pytest.mark.parametrize("module, command, package", [
    ("cv2", ["screen", "back.jpg", "--out", "unused"], "dermlens.screen"),
    ("fastapi", ["serve", "--port", "0"], "dermlens.serve"),
])
def test_the_cli_says_which_extra_to_install_in_one_line(monkeypatch, module, command, package):
    from dermlens.cli import app

    uninstalled(monkeypatch, module, package)
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert f'pip install "dermlens[{package.split(".")[1]}]"' in lines[0]


# -------------------------------------------------------------------------------------------------------------
# pyproject.toml agrees with the code
# -------------------------------------------------------------------------------------------------------------


@cache
def imports_in_source() -> tuple[set[str], list[tuple[str, str, Path]]]:
    """Top-level names of every module imported under src/dermlens, and every ``require(module, extra, ...)``."""
    modules, requires = set(), []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
            elif (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require"
                  and len(node.args) >= 2 and all(isinstance(a, ast.Constant) for a in node.args[:2])):
                module, extra = node.args[0].value, node.args[1].value
                modules.add(module.split(".")[0])
                requires.append((module, extra, path))
    third_party = {m for m in modules if m not in sys.stdlib_module_names and m not in ("dermlens", "__future__")}
    return third_party, requires


@cache
def installed_distributions() -> dict[str, list[str]]:
    return packages_distributions()  # scans every installed package: seconds, so once


def distributions_of(module: str) -> set[str]:
    found = installed_distributions().get(module)
    if not found:
        pytest.fail(f"{module} is imported under src/dermlens but not installed: pip install -e '.[all,test]'")
    return {distribution_name(d) for d in found}


def declared() -> tuple[set[str], dict[str, set[str]]]:
    core = {distribution_name(r) for r in PYPROJECT["project"]["dependencies"]}
    extras = {name: {distribution_name(r) for r in reqs}
              for name, reqs in PYPROJECT["project"]["optional-dependencies"].items() if name not in NOT_RUNTIME}
    return core, extras


def test_every_package_the_code_imports_is_a_dependency_or_an_extra():
    core, extras = declared()
    runtime = core.union(*extras.values())
    modules, _ = imports_in_source()
    undeclared = sorted(m for m in modules if not distributions_of(m) & runtime)
    assert not undeclared, f"imported under src/dermlens but neither a dependency nor in an extra: {undeclared}"


def test_every_dependency_and_extra_is_imported_by_the_code():
    core, extras = declared()
    modules, _ = imports_in_source()
    imported = set().union(*(distributions_of(m) for m in modules))
    unused = {name: sorted(dists - imported) for name, dists in [("dependencies", core), *extras.items()]}
    assert not any(unused.values()), f"declared in pyproject.toml but imported nowhere: {unused}"


def test_each_require_names_the_extra_that_installs_its_module():
    _, extras = declared()
    _, requires = imports_in_source()
    assert requires, "no require() call found: the optional features lost their clear error"
    for module, extra, path in requires:
        assert extra in extras, f"{path.relative_to(ROOT)}: require({module!r}) names unknown extra [{extra}]"
        assert distributions_of(module.split(".")[0]) & extras[extra], (
            f"{path.relative_to(ROOT)}: [{extra}] does not install {module}")


def test_all_brings_every_extra_and_make_setup_installs_all():
    _, extras = declared()
    [everything] = PYPROJECT["project"]["optional-dependencies"]["all"]
    assert set(re.search(r"\[(.*)\]", everything).group(1).split(",")) == set(extras)
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert 'pip install --quiet -e ".[all,test]"' in makefile
    # torch and torchvision are pinned in pyproject.toml only; a second pin in the Makefile could drift from it
    assert not re.search(r"torch(vision)?==", makefile)
