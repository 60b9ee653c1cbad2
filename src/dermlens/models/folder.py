"""The model folder, owned here: every write into one goes through this module, and every write is atomic.

    model.safetensors   the network's weights                       (save_model / save_weights)
    config.json         everything else: classes, preprocessing, operating points, which heads and gate files
    gate.safetensors    the photo gate's fitted parts                (attached by dermlens.gate)
    <head>.safetensors  embedding heads, e.g. the modality recogniser (attach_head; dermlens.models.embedding_head)
    <head>.json
    MODEL_CARD.md, model_card_figures.json, model*.onnx             (copied along)

A file is written to a temporary name in the same folder and renamed into place (``os.replace``, atomic on POSIX
and Windows), so a kill leaves each file whole: the old one or the new one. ``config.json`` is always written last:
whatever it names is already there, so a folder whose config loads, loads whole.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from safetensors.torch import save_file

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "MODEL_CARD.md"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """``with atomic_path(p) as tmp: write(tmp)``: ``tmp`` replaces ``p`` when the block ends without an error,
    and is removed otherwise. For writers that want a path (safetensors, ONNX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide a shared model from its other readers
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, data) -> Path:
    return write_text(path, json.dumps(data, indent=2) + "\n")


def write_tensors(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    """A safetensors file, atomically (tensors are made contiguous CPU tensors first)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def read_config_dict(directory: str | Path) -> dict:
    """``config.json`` of a model folder, without touching the weights."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no model config (a model folder holds {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a valid dermlens model config ({e})") from e
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a valid dermlens model config (a JSON object is expected)")
    return config


def update_config(directory: str | Path, **entries) -> dict:
    """Set top-level entries of a folder's ``config.json`` (re-read, so nothing else in it changes); atomic."""
    config = read_config_dict(directory)
    config.update(entries)
    write_json(Path(directory) / CONFIG_FILE, config)
    return config


def save_weights(directory: str | Path, state_dict: dict, config: dict, metadata: dict[str, str] | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory`` (other files there are left alone):
    weights first, config last."""
    directory = Path(directory)
    write_tensors(directory / WEIGHTS_FILE, state_dict, {"format": "dermlens", **(metadata or {})})
    write_json(directory / CONFIG_FILE, config)
    return directory


def attach(directory: str | Path, files: dict[str, dict], config_entries: dict, *,
           metadata: dict[str, str] | None = None) -> None:
    """Add parts to a model folder: each ``files`` item (file name -> tensors) is written, then ``config_entries``
    are set in ``config.json``. A kill before the config is written leaves the folder as it was (its config does
    not name the new files yet, or names the previous ones, which are whole)."""
    directory = Path(directory)
    for name, tensors in files.items():
        write_tensors(directory / name, tensors, metadata)
    if config_entries:
        update_config(directory, **config_entries)


def copy_folder(source: str | Path, target: str | Path, *, skip: tuple[str, ...] = ()) -> Path:
    """Copy a model folder's files (weights, config, gate, heads, card, exports; not its sub-folders) into
    ``target``, each atomically and ``config.json`` last. ``skip``: file names not to copy."""
    source, target = Path(source), Path(target)
    if target.exists() and target.resolve() == source.resolve():
        return target
    read_config_dict(source)  # a clear error for a folder that is not a model
    target.mkdir(parents=True, exist_ok=True)
    files = sorted((p for p in source.iterdir() if p.is_file() and p.name not in skip and not p.name.startswith(".")),
                   key=lambda p: p.name == CONFIG_FILE)
    for item in files:
        with atomic_path(target / item.name) as tmp:
            shutil.copy2(item, tmp)
    return target


__all__ = ["CARD_FILE", "CONFIG_FILE", "WEIGHTS_FILE", "atomic_path", "attach", "copy_folder", "read_config_dict",
           "save_weights", "update_config", "write_json", "write_tensors", "write_text"]
