"""Checks for the numbers public functions take (counts, sizes, percentiles, ranges), shared so that every one
refuses a bad value the same way: an :class:`~explorer.InvalidArgumentError` naming the argument, what it got
and what it accepts. ``True`` is not a count and ``"99"`` is not a percentile.

Example::

    >>> whole("cols", 4, minimum=1)
    4
    >>> whole("cols", 0, minimum=1)
    Traceback (most recent call last):
    explorer.errors.InvalidArgumentError: cols=0; pass a whole number of at least 1.
"""

from __future__ import annotations

import difflib
import math
import numbers
import reprlib

from .errors import InvalidArgumentError

__all__ = ["backbone", "closest", "whole", "real", "finite_pair", "shown", "text", "torch_device"]

_SHORT = reprlib.Repr()
_SHORT.maxlist = _SHORT.maxtuple = 12
_SHORT.maxstring = _SHORT.maxother = 80


def shown(value: object) -> str:
    """``repr(value)`` for a message, shortened past 12 items or 80 characters (a 10^6-item list stays short)."""
    return _SHORT.repr(value)


def closest(word: object, choices, *, n: int = 5, what: str = "names") -> str:
    """The hint every "unknown name" message ends with: ``" Closest names: a, b."``, or ``""`` when none is close.

    One wording and one cutoff (0.5) for every name explorer looks up: models, stages, layers, classes, methods,
    statistics, colour maps; ``what`` names the kind where the message needs it (``"timm names"``).

    Example::

        >>> closest("viridiss", ["viridis", "magma"])
        ' Closest names: viridis.'
    """
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, [c for c in choices if isinstance(c, str)], n=n, cutoff=0.5)
    return f" Closest {what}: {', '.join(close)}." if close else ""


def whole(name: str, value: object, *, minimum: int = 0, maximum: int | None = None, hint: str = "") -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]``; whole floats (``4.0``) pass, booleans never do."""
    integral = isinstance(value, numbers.Integral) or (
        isinstance(value, float) and math.isfinite(value) and value.is_integer()
    )
    if isinstance(value, bool) or not integral:
        raise InvalidArgumentError(
            f"{name}={shown(value)} ({type(value).__name__}); pass a whole number of at least {minimum}.{hint}"
        )
    number = int(value)
    if number < minimum or (maximum is not None and number > maximum):
        bound = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
        raise InvalidArgumentError(f"{name}={value!r}; pass a whole number {bound}.{hint}")
    return number


def real(name: str, value: object, *, hint: str) -> float:
    """``value`` as a finite ``float`` (a number or a one-value array); strings, booleans, NaN and inf are
    refused, with ``hint`` as the fix."""
    number = math.nan
    if not isinstance(value, (bool, str, bytes)) and hasattr(value, "__float__"):  # numbers, 0-d arrays
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):  # a tensor of several values
            pass
    if not math.isfinite(number):
        raise InvalidArgumentError(f"{name}={shown(value)} ({type(value).__name__}); {hint}")
    return number


def text(name: str, value: object, *, hint: str, optional: bool = False) -> str | None:
    """``value`` if it is a string (None too when ``optional``); anything else is refused with ``hint``."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{name}={shown(value)} ({type(value).__name__}); {hint}")
    return value


def torch_device(name: str, value: object):
    """``value`` as a ``torch.device`` (a string such as ``"cpu"``, ``"cuda:0"``, or a device), or an
    :class:`~explorer.InvalidArgumentError`; torch is imported here, on first use."""
    import torch

    hint = 'pass a torch device: "cpu", "cuda", "cuda:0" or "mps".'
    if not isinstance(value, (str, torch.device)):
        raise InvalidArgumentError(f"{name}={shown(value)} ({type(value).__name__}); {hint}")
    try:
        return torch.device(value)
    except (RuntimeError, TypeError, ValueError) as err:
        raise InvalidArgumentError(f"{name}={shown(value)}; {hint} ({err})") from None


def finite_pair(name: str, value: object) -> tuple[float, float]:
    """``(low, high)`` of two finite numbers with ``low <= high``."""
    hint = "pass (low, high), two finite numbers with low <= high, for example explorer.value_range(maps)."
    try:
        low, high = value  # type: ignore[misc]
        pair = real(name, low, hint=hint), real(name, high, hint=hint)
    except (TypeError, ValueError):  # not two items, or not numbers (InvalidArgumentError is a ValueError)
        raise InvalidArgumentError(f"{name}={shown(value)}; {hint}") from None
    if pair[0] > pair[1]:
        raise InvalidArgumentError(f"{name}={shown(value)}; the low end must not be above the high end.")
    return pair


def backbone(value: object, *, call: str):
    """``value`` if it is a loaded :class:`~explorer.Backbone`, else an :class:`~explorer.InvalidArgumentError`
    showing ``call`` (``"pca(bb, images)"``) with one; the backbones package is imported here, on first use."""
    from .backbones import Backbone

    if not isinstance(value, Backbone):
        raise InvalidArgumentError(
            f"backbone={shown(value)} ({type(value).__name__}); pass a Backbone: bb = explorer.load_backbone(spec), "
            f"then {call}."
        )
    return value
