"""Checkpoint files and folders, generic to every source: reading tensors safely, finding the weights file,
reading a folder's ``config.json``, and loading a state dict strictly.

A leaf module: the sources (:mod:`.timm`, :mod:`.hf`, :mod:`.local`, :mod:`.default`) import it; it imports
none of them.

``.safetensors`` is read first and always safely. Pickle files (``.pt``, ``.pth``, ``.bin``, ``.ckpt``) are read
only with ``torch.load(weights_only=True)``, which refuses any file whose unpickling would run code: such a file
raises :class:`~explorer.UnsafeCheckpointError` and nothing in it is executed. The format is told from the
file's first bytes, so a suffix in capitals or the wrong suffix reads as well.

Before anything is read, the tensors' size is checked: a file's size, or for a zip ``.pth`` the uncompressed
sizes of its members (a 1 MB zip can inflate to gigabytes), against :func:`size_limit` (eight times the
model's own weights when the model is known, else :data:`MAX_CHECKPOINT_BYTES`). What is read must be real,
dense tensors (meta, sparse, quantized and nested tensors are refused) of floating types where the model has
them; other float types are cast, and :func:`load_weights` says so.

Example::

    >>> import tempfile, safetensors.torch, timm
    >>> path = f"{tempfile.mkdtemp()}/resnet18.safetensors"
    >>> safetensors.torch.save_file(timm.create_model("resnet18").state_dict(), path)
    >>> state = read_state_dict(path)
    >>> load_weights(timm.create_model("resnet18"), state, path)        # strict: every key, every shape
    ''
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, UnsafeCheckpointError

__all__ = [
    "read_state_dict",
    "find_weights_file",
    "folder_config",
    "load_weights",
    "nonfinite_note",
    "size_limit",
    "WEIGHT_SUFFIXES",
    "MAX_CHECKPOINT_BYTES",
]

MAX_CHECKPOINT_BYTES = 16 << 30
"""Checkpoints whose tensors would take more than this (16 GiB) are refused before reading when no model says
how big they should be; raise it to allow them."""

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
"""Checkpoint file types, safest first."""

_EMA_KEYS = ("state_dict_ema", "model_ema")
"""Where a training checkpoint keeps its EMA copy; preferred, as timm's ``load_state_dict(use_ema=True)`` does."""

_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module", "ema")


def _unwrap(state: object, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint: its EMA copy first (timm's order), else the first nested state dict,
    with the prefixes of DataParallel and ``torch.compile`` removed by timm's ``clean_state_dict``."""
    from timm.models import clean_state_dict

    if isinstance(state, Mapping):
        state = next((state[k] for k in _EMA_KEYS if isinstance(state.get(k), Mapping)), state)
    seen: set[int] = set()  # a dict that contains itself (d["state_dict"] = d) would loop forever
    while isinstance(state, Mapping) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        if id(state) in seen:
            raise CheckpointError(
                f"{path} holds a dict that contains itself (under {', '.join(_NESTED_KEYS)}), so it has no "
                "tensors to find. Save model.state_dict() with safetensors.torch.save_file(state_dict, "
                "'model.safetensors')."
            )
        seen.add(id(state))
        inner = next((state[k] for k in _NESTED_KEYS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(
            f"{path} holds {type(state).__name__}, not a state dict of tensors. Save model.state_dict() "
            "with safetensors.torch.save_file(state_dict, 'model.safetensors')."
        )
    tensors = clean_state_dict({str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)})
    _check_tensors(tensors, path)
    return tensors


def _check_tensors(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """Refuse tensors that hold no plain values: meta (none at all), sparse, quantized, nested."""
    kinds = (
        ("meta tensors (shapes without values, saved from a model on the meta device)", lambda t: t.is_meta),
        ("sparse tensors", lambda t: t.layout != torch.strided),
        ("quantized tensors", lambda t: t.is_quantized),
        ("nested tensors", lambda t: t.is_nested),
    )
    for kind, test in kinds:
        found = [key for key, tensor in tensors.items() if test(tensor)]
        if found:
            raise CheckpointError(
                f"{path} holds {kind}: {_short(found)}. The explorer reads dense float weights: save them from "
                "the model on the CPU, model.float().state_dict() (dequantized, to_dense() where sparse), with "
                "safetensors.torch.save_file."
            )


def _short(keys: list[str]) -> str:
    """At most five keys, then the count."""
    if not keys:
        return "none"
    return ", ".join(keys[:5]) + (f" ... ({len(keys)} in all)" if len(keys) > 5 else "")


def size_limit(model: nn.Module | None = None) -> int:
    """The most bytes of tensors a checkpoint may hold: eight times ``model``'s own weights and buffers (room
    for float64 and an optimizer's state) plus 64 MiB, and never more than :data:`MAX_CHECKPOINT_BYTES`."""
    if model is None:
        return MAX_CHECKPOINT_BYTES
    own = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return min(MAX_CHECKPOINT_BYTES, 8 * own + (64 << 20))


def _is_zip(head: bytes) -> bool:
    return head.startswith(b"PK\x03\x04")


def _is_safetensors(head: bytes, size: int) -> bool:
    """safetensors starts with its header's length (8 bytes, little-endian), then the JSON header."""
    return len(head) >= 9 and 0 < int.from_bytes(head[:8], "little") < size and head[8:9] == b"{"


def _tensor_bytes(path: Path, head: bytes, size: int) -> int:
    """The bytes reading ``path`` would allocate: a zip's members uncompressed, else the file's size."""
    if not _is_zip(head):
        return size
    try:
        with zipfile.ZipFile(path) as archive:
            return sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise _unreadable(path, f"{type(err).__name__}: {err}") from err


def read_state_dict(path: str | Path, model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, on the CPU, without running any code from it.

    Args:
        path: a safetensors or PyTorch file, whatever its suffix.
        model: the model the weights are for; it bounds the size read (see :func:`size_limit`).

    Raises:
        UnsafeCheckpointError: a pickle that needs code execution (refused; nothing ran).
        CheckpointError: missing, truncated, corrupt, too large, not a state dict, or holding meta, sparse,
            quantized or nested tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint file at {path}.")
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(16)
    limit = size_limit(model)
    needed = _tensor_bytes(path, head, size)
    if needed > limit:
        what = (
            f"eight times what {type(model).__name__}'s weights need, plus 64 MiB"
            if model is not None and limit < MAX_CHECKPOINT_BYTES
            else "explorer.backbones._checkpoint.MAX_CHECKPOINT_BYTES"
        )
        raise CheckpointError(
            f"{path} would take {needed:,} bytes to read ({size:,} on disk), over the limit of {limit:,} "
            f"({what}); nothing was read. It is not a checkpoint of this model, or it is a compressed archive "
            "built to exhaust memory. Export the weights alone with safetensors.torch.save_file."
        )
    torch_format = _is_zip(head) or head.startswith(b"\x80")  # a zip, or a pickle (protocol 2 and up)
    if _is_safetensors(head, size) or (path.suffix.lower() == ".safetensors" and not torch_format):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise CheckpointError(
                f"{path} is not a readable safetensors file ({err}); it may be truncated or corrupt. "
                "Download or export it again."
            ) from err
        return _unwrap(tensors, path)  # "module." and "_orig_mod." prefixes go here too
    try:
        with path.open("rb") as handle:  # a file, not a name: torch would pick its reader by the suffix
            state = torch.load(handle, map_location="cpu", weights_only=True)
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
    """The folder's weights file: ``model.safetensors`` first, then any safetensors, then ``pytorch_model.bin``,
    then other pickle files (suffixes in any case: ``MODEL.SAFETENSORS`` counts)."""
    files = sorted(item for item in folder.iterdir() if item.is_file())
    by_name = {item.name.lower(): item for item in files}
    if "model.safetensors" in by_name:
        return by_name["model.safetensors"]
    found = [item for item in files if item.suffix.lower() == ".safetensors"]
    if not found and "pytorch_model.bin" in by_name:
        return by_name["pytorch_model.bin"]
    for suffix in WEIGHT_SUFFIXES:
        found = found or [item for item in files if item.suffix.lower() == suffix]
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


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> str:
    """Load a state dict strictly, or raise :class:`CheckpointError` listing missing and unexpected keys.

    Tensors must have the model's kind of type: integers, booleans or complex numbers where the model has
    floats are refused; other float types (float16, bfloat16, float64, float8) are cast to the model's.

    Returns:
        A note for ``Backbone.weights_note``: what was cast (empty when nothing was).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{source} does not fit {type(model).__name__}: missing keys: {_short(missing)}; "
            f"unexpected keys: {_short(unexpected)}; wrong shapes: {_short(mismatched)}. "
            "Check that arch= names the architecture the checkpoint was trained with."
        )
    floating = [k for k, v in expected.items() if v.is_floating_point()]
    refused = [f"{k} ({state_dict[k].dtype})" for k in floating if not state_dict[k].is_floating_point()]
    if refused:
        raise CheckpointError(
            f"{source} holds integer, boolean or complex tensors where {type(model).__name__} has float weights: "
            f"{_short(refused)}. Save the float weights (model.float().state_dict()); quantized or packed "
            "weights must be converted back first."
        )
    casts: dict[tuple[torch.dtype, torch.dtype], int] = {}
    for key in floating:
        pair = (state_dict[key].dtype, expected[key].dtype)
        if pair[0] != pair[1]:
            casts[pair] = casts.get(pair, 0) + 1
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:  # what the checks above do not foresee: odd strides, storage errors
        raise CheckpointError(f"{source} cannot be loaded into {type(model).__name__}: {err}") from err
    return "; ".join(
        f"{count} tensor(s) cast from {_dtype_name(have)} to {_dtype_name(want)}"
        for (have, want), count in casts.items()
    )


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def nonfinite_note(model: nn.Module) -> str:
    """A warning when weights or buffers hold NaN or inf (maps would be NaN: magenta grids); else empty.

    Example::

        >>> import timm
        >>> model = timm.create_model("resnet18")
        >>> with torch.no_grad():
        ...     _ = model.layer1[0].conv1.weight.fill_(float("nan")), model.fc.bias.fill_(float("inf"))
        >>> nonfinite_note(model)
        '2 weight tensor(s) hold NaN or inf: layer1.0.conv1.weight, fc.bias. Maps after them will be NaN or inf ...'
    """
    bad = [
        name
        for name, tensor in model.state_dict().items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if not bad:
        return ""
    return (
        f"{len(bad)} weight tensor(s) hold NaN or inf: {_short(bad)}. Maps after them will be NaN or inf "
        "(drawn in magenta, counted as nonfinite in the statistics); the checkpoint is damaged or training "
        "diverged."
    )
