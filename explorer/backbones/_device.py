"""Where and how a backbone's model runs: the device (``"auto"`` resolved, and checked against the machine),
eval mode for one block (the caller's flags given back), and a meta-device copy for shapes without memory.

Example::

    >>> resolve_device("cpu")
    device(type='cpu')
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .._args import shown
from ..errors import InvalidArgumentError

__all__ = ["eval_mode", "meta_copy", "resolve_device"]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run the block with ``model`` in eval mode, then give every submodule back its own training flag.

    As torchvision's feature extractor does: the caller's model is left as it was found.
    """
    if not any(module.training for module in model.modules()):  # already in eval mode: nothing to give back
        yield
        return
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers live on the meta device: shapes without memory."""
    memo = {}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        meta = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = (
            nn.Parameter(meta, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else meta
        )
    return copy.deepcopy(model, memo)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is cuda when available, then mps, then cpu; anything else goes to ``torch.device``.

    Raises:
        InvalidArgumentError: not a device name (``"bogus"``), or a device this machine does not have
            (``"cuda"`` without a GPU, ``"cuda:3"`` with two).
    """
    if not isinstance(device, (str, torch.device)):
        raise InvalidArgumentError(
            f'device={shown(device)} ({type(device).__name__}); pass "auto", "cpu", "cuda", "cuda:1" or "mps".'
        )
    if str(device) != "auto":
        return _available(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _available(device: str | torch.device) -> torch.device:
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidArgumentError(
            f'device={shown(device)} is not a device. Pass "auto", "cpu", "cuda", "cuda:1" or "mps".'
        ) from None
    if resolved.type in ("cpu", "meta"):
        return resolved
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    elif resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        count = int(mps is not None and mps.is_available())
    else:  # xpu and other backends: torch's own module says
        module = getattr(torch, resolved.type, None)
        count = module.device_count() if module is not None and hasattr(module, "device_count") else 0
    if (resolved.index or 0) >= count:
        have = f"{count} {resolved.type} device(s)" if count else f"no {resolved.type} device"
        raise InvalidArgumentError(
            f'device={str(device)!r}: this machine has {have}. Pass device="auto" (cuda, then mps, then cpu) '
            'or device="cpu".'
        )
    return resolved
