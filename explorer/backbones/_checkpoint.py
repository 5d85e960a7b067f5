"""Checkpoint files and folders, generic to every source: reading tensors safely, finding the weights file,
reading a folder's ``config.json``, and loading a state dict strictly.

A leaf module: the sources (:mod:`.timm`, :mod:`.hf`, :mod:`.local`, :mod:`.default`) import it; it imports
none of them.

``.safetensors`` is read first and always safely. Pickle files (``.pt``, ``.pth``, ``.bin``, ``.ckpt``) are read
only with ``torch.load(weights_only=True)``, which refuses any file whose unpickling would run code: such a file
raises :class:`~explorer.UnsafeCheckpointError` and nothing in it is executed.

Example::

    >>> state = read_state_dict("resnet18.safetensors")
    >>> load_weights(timm.create_model("resnet18"), state, "resnet18.safetensors")
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, UnsafeCheckpointError

__all__ = ["read_state_dict", "find_weights_file", "folder_config", "load_weights", "WEIGHT_SUFFIXES"]

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
"""Checkpoint file types, safest first."""

_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module", "ema")


def _unwrap(state: object, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(state, Mapping) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        inner = next((state[k] for k in _NESTED_KEYS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(
            f"{path} holds {type(state).__name__}, not a state dict of tensors. Save model.state_dict() "
            "with safetensors.torch.save_file(state_dict, 'model.safetensors')."
        )
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, on the CPU, without running any code from it.

    Raises:
        UnsafeCheckpointError: a pickle that needs code execution (refused; nothing ran).
        CheckpointError: missing, truncated, corrupt, or not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint file at {path}.")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise CheckpointError(
                f"{path} is not a readable safetensors file ({err}); it may be truncated or corrupt. "
                "Download or export it again."
            ) from err
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch wraps the unpickler's short reason in a long message; the reason tells refused from corrupt
        reason = str(err.__context__ or err).split(". ")[0]
        if "GLOBAL" not in reason and "add_safe_globals" not in reason:
            raise _unreadable(path, reason) from err
        raise UnsafeCheckpointError(
            f"{path} was refused: loading it would run code from the file ({reason}), which the explorer "
            "never does, and nothing in it was executed. Ask for the weights as safetensors, or, from a copy "
            "you trust, re-save just the tensors: safetensors.torch.save_file(model.state_dict(), "
            "'model.safetensors')."
        ) from err
    except MemoryError:
        raise
    except Exception as err:  # torch's readers raise many types on corrupt data: EOF, zip, assert, struct
        raise _unreadable(path, f"{type(err).__name__}: {err}".rstrip(": ")) from err
    return _unwrap(state, path)


def _unreadable(path: Path, reason: object) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a readable PyTorch checkpoint ({reason}); it may be truncated or corrupt, or not a "
        "checkpoint at all (a failed download saves an error page). Download or export it again."
    )


def find_weights_file(folder: Path) -> Path:
    """The folder's weights file: ``model.safetensors`` first, then any safetensors, then pickle files."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    for suffix in WEIGHT_SUFFIXES:
        found = sorted(folder.glob(f"*{suffix}"))
        if found:
            return found[0]
    raise CheckpointError(
        f"No weights file ({', '.join(WEIGHT_SUFFIXES)}) in {folder}. Pass pretrained=False for random weights."
    )


def folder_config(folder: Path) -> dict:
    """The folder's ``config.json`` as a dict; empty when it is missing or unreadable.

    A transformers folder's has a ``model_type``, a timm folder's an ``architecture``.
    """
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load a state dict strictly, or raise :class:`CheckpointError` listing missing and unexpected keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:

        def short(keys: list[str]) -> str:
            return (
                ", ".join(keys[:5]) + (f" ... ({len(keys)} in all)" if len(keys) > 5 else "")
                if keys
                else "none"
            )

        raise CheckpointError(
            f"{source} does not fit {type(model).__name__}: missing keys: {short(missing)}; "
            f"unexpected keys: {short(unexpected)}; wrong shapes: {short(mismatched)}. "
            "Check that arch= names the architecture the checkpoint was trained with."
        )
    model.load_state_dict(state_dict, strict=True)
