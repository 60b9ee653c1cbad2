"""Optional dependencies: a missing one is one clear error naming the extra that installs it."""
from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the pip extra that brings it."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` or raise MissingExtraError: '<feature> needs <module>: pip install "dermlens[<extra>]"'."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(f'{feature} needs {module}: pip install "dermlens[{extra}]"') from error
