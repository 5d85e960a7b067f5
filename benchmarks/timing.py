"""The interleaved runner: every method of a comparison runs in turn (A, B, C, A, B, C, ...), after a warm-up,
and is summarised by its median and interquartile range.

Interleaving spreads slow drifts of the machine (other processes, thermal state, caches) over every method
alike, so ratios between methods stay meaningful on a busy machine where absolute times do not.

Example::

    >>> timings = run_interleaved([Method("a", lambda: sum(range(1000))), Method("b", lambda: None)],
    ...                           repeats=5, warmup=1)
    >>> timings["a"].n, timings["a"].median_ms > timings["b"].median_ms
    (5, True)
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["Method", "Timing", "run_interleaved", "device_sync", "time_once"]

Sync = Callable[[], None]


@dataclass
class Method:
    """One contender of a comparison.

    Attributes:
        name: how tables name it.
        fn: the timed call; what it returns is dropped after the clock stops.
        repeats: timed calls for this method when it should run fewer than the others (slow peers); they are
            spread evenly over the rounds. None: the comparison's ``repeats``.
        warmup: untimed calls before the first round; None: the comparison's ``warmup``.
        setup: untimed work before every call (put state in place, install a peer's global wrappers).
        teardown: untimed work after every call (undo what ``setup`` did).
    """

    name: str
    fn: Callable[[], object]
    repeats: int | None = None
    warmup: int | None = None
    setup: Callable[[], None] | None = None
    teardown: Callable[[], None] | None = None


@dataclass
class Timing:
    """Wall-clock samples of one method, in milliseconds, with the summaries the report uses."""

    name: str
    samples_ms: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        """How many timed calls."""
        return len(self.samples_ms)

    @property
    def median_ms(self) -> float:
        """The median sample (NaN when there is none)."""
        return statistics.median(self.samples_ms) if self.samples_ms else float("nan")

    @property
    def quartiles_ms(self) -> tuple[float, float]:
        """The first and third quartiles (both the one sample when there is one)."""
        if len(self.samples_ms) < 2:
            value = self.samples_ms[0] if self.samples_ms else float("nan")
            return value, value
        q1, _, q3 = statistics.quantiles(self.samples_ms, n=4, method="inclusive")
        return q1, q3

    @property
    def iqr_ms(self) -> float:
        """Interquartile range: the spread of the middle half of the samples."""
        q1, q3 = self.quartiles_ms
        return q3 - q1

    def to_dict(self) -> dict:
        """Plain numbers for ``results.json``."""
        q1, q3 = self.quartiles_ms
        return {
            "n": self.n,
            "median_ms": self.median_ms,
            "q1_ms": q1,
            "q3_ms": q3,
            "iqr_ms": self.iqr_ms,
            "min_ms": min(self.samples_ms, default=float("nan")),
            "samples_ms": list(self.samples_ms),
        }


def device_sync(device: str | torch.device) -> Sync:
    """What to call before and after a timed region: ``torch.cuda.synchronize`` on CUDA, nothing elsewhere."""
    if torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def time_once(fn: Callable[[], object], sync: Sync | None = None) -> tuple[float, object]:
    """``(milliseconds, result)`` of one call, with the device synchronised on both sides and gc paused."""
    sync = sync or (lambda: None)
    collecting = gc.isenabled()
    gc.disable()
    try:
        sync()
        start = time.perf_counter()
        result = fn()
        sync()
        elapsed = (time.perf_counter() - start) * 1000.0
    finally:
        if collecting:
            gc.enable()
    return elapsed, result


def _call(method: Method, sync: Sync) -> float:
    if method.setup is not None:
        method.setup()
    try:
        elapsed, result = time_once(method.fn, sync)
        del result
    finally:
        if method.teardown is not None:
            method.teardown()
    return elapsed


def _rounds_of(count: int, rounds: int) -> set[int]:
    """The rounds a method with ``count`` calls takes part in, spread evenly over ``rounds``."""
    count = min(count, rounds)
    return {(k * rounds) // count for k in range(count)} if count else set()


def run_interleaved(
    methods: Sequence[Method], repeats: int, warmup: int = 1, sync: Sync | None = None
) -> dict[str, Timing]:
    """Time every method round-robin: warm-up rounds, then ``repeats`` rounds of one call each.

    Args:
        methods: the contenders, called in this order within a round.
        repeats: timed calls per method (a method's own ``repeats`` overrides it).
        warmup: untimed calls per method before the first timed round (a method's own ``warmup`` overrides).
        sync: called before and after each timed call (see :func:`device_sync`).

    Returns:
        A :class:`Timing` per method name, in the order given.
    """
    sync = sync or (lambda: None)
    warmups = {m.name: warmup if m.warmup is None else m.warmup for m in methods}
    for step in range(max(warmups.values(), default=0)):
        for method in methods:
            if step < warmups[method.name]:
                _call(method, sync)
    counts = {m.name: repeats if m.repeats is None else m.repeats for m in methods}
    rounds = max(counts.values(), default=0)
    plan = {name: _rounds_of(count, rounds) for name, count in counts.items()}
    timings = {m.name: Timing(m.name) for m in methods}
    for round_index in range(rounds):
        for method in methods:
            if round_index in plan[method.name]:
                timings[method.name].samples_ms.append(_call(method, sync))
    return timings
