"""Per-channel statistics of feature maps, reduced on the map's device; only the small result leaves it.

:func:`channel_stats` takes one pass over a ``(C, H, W)`` or ``(B, C, H, W)`` map and returns a
:class:`ChannelStats`: per channel mean, std, min, max, l2 norm, sparsity (share of exact zeros, the dead-ReLU
signal), share of positive values and the count of non-finite values, per image ``(B, C)`` and pooled over the
batch ``(C,)``. Non-finite values (NaN, inf) are counted and left out of every other statistic.

Comparisons: :func:`channel_difference` (per channel, two maps of the same stage: two images, or two checkpoints
of one architecture) and :func:`stage_similarity` (cosine and linear CKA of a whole stage, plain and debiased).

Example::

    >>> stats = channel_stats(maps["blocks.1"])          # maps["blocks.1"]: (1, 24, 56, 56)
    >>> stats.mean.shape, stats.per_image["mean"].shape
    ((24,), (1, 24))
    >>> stats.top(3, by="std")
    Ranking(channels=array([22,  8, 13]), values=array([10.18741294,  9.96842062,  9.49160425]))
    >>> stats.summary()["dead"]
    0
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import numpy as np
import torch

from ._args import closest, shown, whole
from .arrays import as_nchw
from .errors import InvalidArgumentError
from .vocabulary import STAT_NAMES

__all__ = [
    "STAT_NAMES",
    "DIFFERENCE_NAMES",
    "ChannelDifference",
    "ChannelStats",
    "Ranking",
    "ranked",
    "channel_difference",
    "channel_stats",
    "stage_similarity",
]

_log = logging.getLogger(__name__)

DIFFERENCE_NAMES = ("mean_abs", "max_abs", "rms", "mean", "cosine", "relative", "nonfinite")
"""The per-channel statistics of :class:`ChannelDifference`, in table order."""


class Ranking(NamedTuple):
    """Channels sorted by a statistic, with their values; NaN values always come last."""

    channels: np.ndarray
    values: np.ndarray


def ranked(values: np.ndarray, descending: bool) -> np.ndarray:
    """Indices that sort ``values``, NaN last, ties by index: the one ranking of channels everywhere.

    Example::

        >>> ranked(np.array([0.5, np.nan, 0.9, 0.5]), descending=True)
        array([2, 0, 3, 1])
    """
    nan = np.isnan(values)
    key = np.where(nan, 0.0, -values if descending else values)
    return np.lexsort((np.arange(values.size), key, nan))


def _check_name(by: str, names: tuple[str, ...]) -> None:
    if not isinstance(by, str) or by not in names:
        raise InvalidArgumentError(
            f"Unknown statistic {shown(by)}.{closest(by, names)} Choose from: {', '.join(names)}."
        )


class _ChannelTable:
    """Ranking and table rows shared by the per-channel result classes."""

    _columns: ClassVar[tuple[str, ...]] = ()

    def values(self, by: str, image: int | None = None) -> np.ndarray:
        """The ``(C,)`` values of one statistic, pooled over the batch or of one ``image``."""
        _check_name(by, self._columns)
        if image is None:
            return getattr(self, by)
        return self._image_values(by, image)

    def _image_values(self, by: str, image: int) -> np.ndarray:
        raise InvalidArgumentError(
            f"{type(self).__name__} holds pooled values only; call values({by!r}) without image."
        )

    def _ranked(self, k: int | None, by: str, image: int | None, descending: bool) -> Ranking:
        values = self.values(by, image)
        order = ranked(values, descending)
        order = order if k is None else order[: whole("k", k)]
        return Ranking(channels=order.astype(np.int64), values=values[order])

    def top(self, k: int | None = None, by: str = "mean", image: int | None = None) -> Ranking:
        """The ``k`` channels with the highest ``by`` (all when ``k`` is None), highest first; ties by index."""
        return self._ranked(k, by, image, descending=True)

    def bottom(self, k: int | None = None, by: str = "mean", image: int | None = None) -> Ranking:
        """The ``k`` channels with the lowest ``by``, lowest first; NaN values come last."""
        return self._ranked(k, by, image, descending=False)

    def rows(self, image: int | None = None) -> list[dict]:
        """One plain dict per channel (``{"channel": 0, "mean": ..., ...}``), for tables and CSV."""
        columns = {name: self.values(name, image).tolist() for name in self._columns}
        return [
            {"channel": channel, **{name: columns[name][channel] for name in self._columns}}
            for channel in range(len(self))
        ]

    def __len__(self) -> int:
        return int(getattr(self, self._columns[0]).shape[0])


@dataclass(frozen=True, repr=False, eq=False)
class ChannelStats(_ChannelTable):
    """Per-channel statistics of one stage's map, on the CPU as NumPy arrays.

    The attributes ``mean`` ... ``nonfinite`` are pooled over the batch, each ``(C,)``; ``per_image`` holds the
    same names, each ``(B, C)``. ``std`` is the population standard deviation; ``sparsity`` and ``positive``
    are shares of the finite values; ``nonfinite`` counts NaN and inf values, which every other statistic
    leaves out. A channel with no finite value has NaN statistics.

    Attributes:
        shape: ``(B, C, H, W)`` of the map.
    """

    shape: tuple[int, int, int, int]
    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    l2: np.ndarray
    sparsity: np.ndarray
    positive: np.ndarray
    nonfinite: np.ndarray
    per_image: dict[str, np.ndarray] = field(default_factory=dict)

    _columns: ClassVar[tuple[str, ...]] = STAT_NAMES

    def _image_values(self, by: str, image: int) -> np.ndarray:
        images = self.shape[0]
        if (
            isinstance(image, bool)
            or not isinstance(image, (int, np.integer))
            or not -images <= image < images
        ):
            raise InvalidArgumentError(
                f"image={shown(image)} is not an image index; this map holds {images} image(s): 0..{images - 1}."
            )
        return self.per_image[by][image]

    def dead_channels(self, image: int | None = None) -> np.ndarray:
        """Channels whose every finite value is exactly zero (a dead ReLU)."""
        return np.flatnonzero(self.values("sparsity", image) == 1.0)

    def constant_channels(self, image: int | None = None) -> np.ndarray:
        """Channels with one value everywhere (dead channels included)."""
        return np.flatnonzero(self.values("max", image) == self.values("min", image))

    def nonfinite_channels(self, image: int | None = None) -> np.ndarray:
        """Channels holding at least one NaN or inf."""
        return np.flatnonzero(self.values("nonfinite", image) > 0)

    def summary(self, image: int | None = None) -> dict:
        """The stage at a glance: ``channels``, ``images``, counts of ``dead``, ``constant`` and ``nonfinite``
        channels, ``nonfinite_values``, and the stage's mean ``sparsity`` and ``positive`` share."""
        sparsity = self.values("sparsity", image)
        positive = self.values("positive", image)
        return {
            "channels": len(self),
            "images": self.shape[0] if image is None else 1,
            "dead": int(self.dead_channels(image).size),
            "constant": int(self.constant_channels(image).size),
            "nonfinite": int(self.nonfinite_channels(image).size),
            "nonfinite_values": int(self.values("nonfinite", image).sum()),
            "sparsity": float(np.nanmean(sparsity)) if not np.isnan(sparsity).all() else math.nan,
            "positive": float(np.nanmean(positive)) if not np.isnan(positive).all() else math.nan,
        }

    def to_dict(self) -> dict:
        """Shape, summary and rows as plain Python values (for JSON)."""
        return {"shape": list(self.shape), "summary": self.summary(), "rows": self.rows()}

    def __repr__(self) -> str:
        s = self.summary()
        return (
            f"ChannelStats(shape={self.shape}, dead={s['dead']}, constant={s['constant']}, "
            f"nonfinite={s['nonfinite']}, sparsity={s['sparsity']:.3f})"
        )


@dataclass(frozen=True, repr=False, eq=False)
class ChannelDifference(_ChannelTable):
    """Per-channel comparison of two maps ``a`` and ``b`` of one shape, pooled over the batch, each ``(C,)``.

    Attributes:
        shape: ``(B, C, H, W)`` of the maps.
        mean_abs: mean of ``|a - b|``.
        max_abs: largest ``|a - b|``.
        rms: root mean square of ``a - b``.
        mean: mean of ``a - b`` (signed: positive where ``a`` is larger).
        cosine: cosine similarity of the channel in ``a`` and in ``b``; 1 where both are all zero, 0 where
            only one is.
        relative: ``||a - b|| / ||a||``; 0 where both are zero, inf where only ``a`` is.
        nonfinite: positions where ``a`` or ``b`` is NaN or inf; they are left out of the rest.
    """

    shape: tuple[int, int, int, int]
    mean_abs: np.ndarray
    max_abs: np.ndarray
    rms: np.ndarray
    mean: np.ndarray
    cosine: np.ndarray
    relative: np.ndarray
    nonfinite: np.ndarray

    _columns: ClassVar[tuple[str, ...]] = DIFFERENCE_NAMES

    def to_dict(self) -> dict:
        """Shape and rows as plain Python values (for JSON)."""
        return {"shape": list(self.shape), "rows": self.rows()}

    def __repr__(self) -> str:
        return f"ChannelDifference(shape={self.shape}, mean_abs={float(np.nanmean(self.mean_abs)):.4g})"


def channel_stats(fmap: torch.Tensor | np.ndarray) -> ChannelStats:
    """Per-channel statistics of one stage's map, per image and pooled over the batch.

    Everything is reduced on the map's device in one pass; a single small array is copied to the CPU.

    Args:
        fmap: ``(C, H, W)`` or ``(B, C, H, W)``, any float dtype (half precision is reduced in float32).

    Returns:
        A :class:`ChannelStats`; ``.top(k, by)``, ``.rows()`` and ``.summary()`` read it.

    Example::

        >>> stats = channel_stats(torch.tensor([[[0.0, 2.0], [0.0, 2.0]]]))    # one channel, 2x2
        >>> stats.mean, stats.sparsity, stats.l2
        (array([1.]), array([0.5]), array([2.82842704]))
    """
    x = as_nchw(fmap)
    batch, channels, height, width = x.shape
    x = x.reshape(batch, channels, -1).float()
    total = x.sum(-1)
    if bool(torch.isfinite(total).all()):  # every value finite (an overflowing sum takes the masked way)
        values, finite = x, None
        count = torch.full_like(total, float(height * width))
        low, high = x.amin(-1), x.amax(-1)
    else:
        finite = torch.isfinite(x)
        values = x.masked_fill(~finite, 0.0)
        total = values.sum(-1)
        count = finite.sum(-1, dtype=torch.float32)
        low = x.masked_fill(~finite, math.inf).amin(-1)
        high = x.masked_fill(~finite, -math.inf).amax(-1)
    mean = total / count
    deviation = values - mean[..., None]
    if finite is not None:
        deviation.masked_fill_(~finite, 0.0)
    m2 = torch.linalg.vector_norm(deviation, dim=-1).square()
    sumsq = torch.linalg.vector_norm(values, dim=-1).square()
    signs = torch.sign(values)  # counting through signs is several times faster than summing comparisons
    balance = signs.sum(-1)
    nonzero = signs.abs_().sum(-1)
    zeros = count - nonzero
    positive = (nonzero + balance) / 2
    nonfinite = height * width - count

    pooled_count = count.sum(0)
    pooled_mean = total.sum(0) / pooled_count
    spread = torch.where(count > 0, count * (mean - pooled_mean).square(), torch.zeros_like(mean))
    pooled = [
        pooled_count,
        pooled_mean,
        (m2 + spread).sum(0),
        low.amin(0),
        high.amax(0),
        sumsq.sum(0),
        zeros.sum(0),
        positive.sum(0),
        nonfinite.sum(0),
    ]
    per_image = [count, mean, m2, low, high, sumsq, zeros, positive, nonfinite]
    packed = torch.cat([torch.stack(per_image, -1), torch.stack(pooled, -1)[None]]).cpu().double().numpy()

    def derive(p: np.ndarray) -> dict[str, np.ndarray]:
        n = p[..., 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            empty = n == 0
            return {
                "mean": p[..., 1],
                "std": np.sqrt(p[..., 2] / n),
                "min": np.where(empty, np.nan, p[..., 3]),
                "max": np.where(empty, np.nan, p[..., 4]),
                "l2": np.sqrt(p[..., 5]),
                "sparsity": p[..., 6] / n,
                "positive": p[..., 7] / n,
                "nonfinite": p[..., 8].round().astype(np.int64),
            }

    per = derive(packed[:batch])
    result = ChannelStats(shape=(batch, channels, height, width), per_image=per, **derive(packed[batch]))
    if result.nonfinite.any():
        _log.warning(
            "%d NaN/inf values in %d of %d channels; statistics leave them out",
            int(result.nonfinite.sum()),
            int((result.nonfinite > 0).sum()),
            channels,
        )
    return result


def _pair(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = as_nchw(a, "a"), as_nchw(b, "b")
    if x.shape != y.shape:
        raise InvalidArgumentError(
            f"Maps of shapes {tuple(x.shape)} and {tuple(y.shape)} cannot be compared position by position. "
            "Compare one stage of the same architecture on same-sized inputs, or compare channel_stats() instead."
        )
    return x.float(), y.to(device=x.device, dtype=torch.float32)


def channel_difference(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> ChannelDifference:
    """Per-channel difference of two maps of one stage: two images, or two checkpoints of one architecture.

    Args:
        a: ``(C, H, W)`` or ``(B, C, H, W)``.
        b: the same shape as ``a`` (moved to ``a``'s device).

    Returns:
        A :class:`ChannelDifference`; ``.top(8, by="mean_abs")`` lists the channels that changed most.

    Example::

        >>> diff = channel_difference(before["blocks.2"], after["blocks.2"])     # (1, 40, 28, 28) each
        >>> diff.top(3, by="relative").channels
        array([21, 23, 16])
    """
    x, y = _pair(a, b)
    batch, channels, height, width = x.shape
    x = x.transpose(0, 1).reshape(channels, -1)
    y = y.transpose(0, 1).reshape(channels, -1)
    finite = torch.isfinite(x) & torch.isfinite(y)
    if not bool(finite.all()):
        x, y = x.masked_fill(~finite, 0.0), y.masked_fill(~finite, 0.0)
    count = finite.sum(-1, dtype=torch.float32)
    delta = x - y
    stacked = torch.stack(
        [
            count,
            delta.abs().sum(-1),
            delta.abs().amax(-1) if delta.shape[-1] else count * 0,
            delta.square().sum(-1),
            delta.sum(-1),
            (x * y).sum(-1),
            x.square().sum(-1),
            y.square().sum(-1),
        ],
        -1,
    )
    n, abs_sum, max_abs, sq_sum, total, dot, xx, yy = stacked.cpu().double().numpy().T
    with np.errstate(invalid="ignore", divide="ignore"):
        norms = np.sqrt(xx * yy)
        cosine = np.where(norms > 0, dot / norms, np.where((xx == 0) & (yy == 0), 1.0, 0.0))
        relative = np.where(xx > 0, np.sqrt(sq_sum / xx), np.where(sq_sum == 0, 0.0, np.inf))
        return ChannelDifference(
            shape=(batch, channels, height, width),
            mean_abs=abs_sum / n,
            max_abs=np.where(n > 0, max_abs, np.nan),
            rms=np.sqrt(sq_sum / n),
            mean=total / n,
            cosine=np.clip(cosine, -1.0, 1.0),
            relative=relative,
            nonfinite=(batch * height * width - n).round().astype(np.int64),
        )


def _debiased_hsic(
    cross: torch.Tensor, rows_x: torch.Tensor, rows_y: torch.Tensor, samples: int
) -> torch.Tensor:
    """The unbiased HSIC estimator (Song et al., 2012), times ``n (n - 3)``, of two linear kernels of centred
    features: ``cross`` is ``||X^T Y||_F^2``, ``rows_x`` and ``rows_y`` the squared norms of each sample."""
    n = samples
    return cross - n / (n - 2) * (rows_x @ rows_y) + rows_x.sum() * rows_y.sum() / ((n - 1) * (n - 2))


def stage_similarity(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> dict[str, float]:
    """How alike two maps of one stage are as a whole: cosine similarity and linear CKA, plain and debiased.

    Linear CKA (Kornblith et al., 2019) compares two sets of features of the same samples. Here a sample is
    every spatial position of every image (Kornblith et al. use one sample per image) and the channels are the
    features: both maps become ``(B*H*W, C)`` matrices, centred per channel. CKA is invariant to an orthogonal
    transform (a rotation) and an isotropic scale of the channels, not to other invertible maps; it is near 0
    for unrelated maps. The plain estimator is biased upward when the samples are few against the channels
    (two random ``(n, C)`` matrices give about ``C / (n + C)``, not 0); ``"cka_debiased"`` uses the unbiased
    HSIC estimator of Song et al. (2012) instead, as in Kornblith et al.'s code, so unrelated maps give about 0
    (it can then be slightly negative). Neither corrects for neighbouring positions being alike. Computed on
    ``a``'s device, in float64 where the device has it.

    Args:
        a: ``(C, H, W)`` or ``(B, C, H, W)``.
        b: the same images and grid as ``a`` (``B``, ``H``, ``W``); the channels may differ (two architectures,
            or two stages pooled to one grid), and then ``cosine`` is NaN.

    Returns:
        ``{"cosine": float, "cka": float, "cka_debiased": float}``; all NaN when a map holds NaN or inf; CKA is
        NaN when a map is constant, cosine when one is all zero; ``cka_debiased`` needs at least 4 samples.

    Raises:
        InvalidArgumentError: the maps hold different images or grids.

    Example::

        >>> stage_similarity(before["blocks.4"], after["blocks.4"])     # the cat and the astronaut, (1, 112, 14, 14)
        {'cosine': 0.10090540834094147, 'cka': 0.2899314856289894, 'cka_debiased': 0.18913585473409722}
    """
    x, y = as_nchw(a, "a").float(), as_nchw(b, "b").to(dtype=torch.float32)
    y = y.to(x.device)
    if (x.shape[0], *x.shape[2:]) != (y.shape[0], *y.shape[2:]):
        raise InvalidArgumentError(
            f"Maps of shapes {tuple(x.shape)} and {tuple(y.shape)} hold different samples (images x positions). "
            "Compare maps of the same images on one grid: resample one, for example "
            "torch.nn.functional.adaptive_avg_pool2d(fmap, (7, 7))."
        )
    if not bool(torch.isfinite(x).all() & torch.isfinite(y).all()):
        _log.warning("stage_similarity: a map holds NaN or inf; the similarity is NaN")
        return {"cosine": math.nan, "cka": math.nan, "cka_debiased": math.nan}
    dtype = torch.float32 if x.device.type == "mps" else torch.float64
    x = x.to(dtype).transpose(0, 1).reshape(x.shape[1], -1).T
    y = y.to(dtype).transpose(0, 1).reshape(y.shape[1], -1).T
    samples, channels = x.shape[0], max(x.shape[1], y.shape[1])
    if x.shape == y.shape:
        cosine = (x * y).sum() / (x.norm() * y.norm())
    else:
        cosine = torch.tensor(math.nan, dtype=dtype, device=x.device)
    x = x - x.mean(0)
    y = y - y.mean(0)
    if samples >= channels:
        cross, xx, yy = (x.T @ y).square().sum(), (x.T @ x).square().sum(), (y.T @ y).square().sum()
    else:
        gx, gy = x @ x.T, y @ y.T
        cross, xx, yy = (gx * gy).sum(), gx.square().sum(), gy.square().sum()
    cka = cross / (xx * yy).sqrt()
    if samples >= 4:
        rows_x, rows_y = x.square().sum(1), y.square().sum(1)
        debiased = (
            _debiased_hsic(cross, rows_x, rows_y, samples)
            / (
                _debiased_hsic(xx, rows_x, rows_x, samples) * _debiased_hsic(yy, rows_y, rows_y, samples)
            ).sqrt()
        )
    else:
        debiased = torch.tensor(math.nan, dtype=dtype, device=x.device)
    cosine_value, cka_value, debiased_value = torch.stack([cosine, cka, debiased]).cpu().tolist()
    return {"cosine": float(cosine_value), "cka": float(cka_value), "cka_debiased": float(debiased_value)}
