"""Checkpoints that survive a kill: one safetensors file holding model and optimizer tensors, with the rest
(epoch, best score, optimizer hyper-parameters) as JSON in its metadata.

One file, written to a temporary name and renamed: a kill during the write leaves the previous checkpoint whole,
and tensors and progress can never come from two different epochs.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

TENSORS_FILE = "checkpoint.safetensors"


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, slots in state["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, progress: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = _flatten_optimizer(optimizer)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"state": json.dumps({"progress": progress, "optimizer": opt_meta})}
    tmp = directory / (TENSORS_FILE + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, directory / TENSORS_FILE)


def has_checkpoint(directory: Path) -> bool:
    return (directory / TENSORS_FILE).is_file()


def read_progress(directory: Path) -> dict:
    """The progress dict saved with a checkpoint, without loading its tensors (to check it fits first)."""
    with safe_open(str(directory / TENSORS_FILE), framework="pt") as f:
        return json.loads(f.metadata()["state"])["progress"]


def load_checkpoint(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore model, optimizer and RNG; return the progress dict saved with them."""
    path = directory / TENSORS_FILE
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["state"])
    tensors = load_file(str(path))
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    torch.set_rng_state(tensors["rng.torch"])
    return meta["progress"]
