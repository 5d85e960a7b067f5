"""Maps given as tensors, arrays or nested lists, checked and shaped for the function that takes them: the one
place that turns user input into a detached tensor of the expected rank, with a message naming the fix.

Example::

    >>> as_nchw(np.zeros((64, 7, 7))).shape
    torch.Size([1, 64, 7, 7])
"""

from __future__ import annotations

import numpy as np
import torch

from ._args import shown
from .errors import InvalidArgumentError

__all__ = ["as_hw", "as_nchw", "as_tensor"]


def as_tensor(values: object, what: str) -> torch.Tensor:
    """A tensor or a numeric array (or nested lists of numbers) as a detached tensor; anything else (strings,
    objects, ragged or absurdly nested lists) is an :class:`~explorer.InvalidArgumentError`."""
    if isinstance(values, torch.Tensor):
        return values.detach()
    if isinstance(values, np.ndarray) and values.dtype.kind not in "biuf":
        raise InvalidArgumentError(f"{what} takes numbers; got an array of {values.dtype}.")
    if not isinstance(values, (np.ndarray, list, tuple)):
        raise InvalidArgumentError(
            f"{what} takes a tensor or an array, got {type(values).__name__}: {shown(values)}. "
            'Pass a feature map, for example maps["layer1"].'
        )
    try:
        return torch.as_tensor(values).detach()
    except (TypeError, ValueError, RuntimeError, RecursionError) as err:
        raise InvalidArgumentError(
            f"{what} takes a tensor or an array of numbers; {shown(values)} is not one ({type(err).__name__})."
        ) from None


def as_nchw(fmap: torch.Tensor | np.ndarray, what: str = "fmap") -> torch.Tensor:
    """A ``(C, H, W)`` or ``(B, C, H, W)`` map (tensor or array) as a detached ``(B, C, H, W)`` tensor."""
    tensor = as_tensor(fmap, what)
    if tensor.ndim == 3:
        tensor = tensor[None]
    if tensor.ndim == 4:
        if tensor.numel() == 0:
            raise InvalidArgumentError(f"{what} has shape {tuple(tensor.shape)}, which holds no values.")
        return tensor
    raise InvalidArgumentError(
        f"{what} has shape {tuple(tensor.shape)}; pass one stage's map as (C, H, W) or (B, C, H, W), "
        'for example maps["layer1"] or maps["layer1"][0].'
    )


def as_hw(channel_map: torch.Tensor | np.ndarray, what: str) -> torch.Tensor:
    """One channel, ``(H, W)`` (or with leading size-1 dimensions), as a detached ``(H, W)`` tensor."""
    values = as_tensor(channel_map, what)
    while values.ndim > 2 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 2:
        raise InvalidArgumentError(
            f"{what} takes one channel, (H, W); got shape {tuple(values.shape)}. "
            'Pick an image and a channel: maps["layer1"][0, 5].'
        )
    return values
