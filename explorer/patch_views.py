"""What a stage's locations have in common, across images: PCA colours and click-to-compare similarity.

Both work on the stage's grid of locations (a ViT's patch tokens, a CNN's cells): every location of every image
is one row of a ``(locations, channels)`` table. :func:`pca` fits principal directions jointly over all of them
(the DINOv2 figure), optionally on the foreground only; :func:`similarity` compares every location with one
query location (the DIFT / dino-vit-features correspondence figure). Either takes images (one forward pass) or a
:class:`~explorer.FeatureMaps` already captured (no forward pass: the panel's cache).

Example::

    >>> bb = explorer.load_backbone("default")
    >>> photos = list(explorer.sample_images().values())[:4]
    >>> pv = explorer.pca(bb, photos, stage="blocks.4", foreground="auto")
    >>> pv.components.shape, pv.rgb.shape, pv.foreground.shape
    (torch.Size([4, 3, 14, 14]), (4, 14, 14, 3), torch.Size([4, 14, 14]))
    >>> sim = explorer.similarity(bb, photos, stage="blocks.4", query=(0, 5, 7))
    >>> sim.maps.shape, sim.best[1]
    (torch.Size([4, 14, 14]), (11, 1))
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ._args import backbone as _backbone
from ._args import real, shown, whole
from .errors import InvalidArgumentError
from .hooks import FeatureMaps
from .images import ImageInput

__all__ = ["PCABasis", "PatchPCA", "Similarity", "pca", "similarity", "stage_grid"]

_log = logging.getLogger(__name__)

ImagesT = Sequence[ImageInput] | ImageInput | torch.Tensor | FeatureMaps
"""Images (paths, bytes, PIL, arrays), a ``(B, 3, H, W)`` tensor of ``pixel_values``, or captured
:class:`~explorer.FeatureMaps` (then no forward pass runs)."""

SizeT = int | tuple[int, int] | None
"""A display size: a side, ``(height, width)``, or None for the stage's own grid."""

ForegroundT = str | float | None
"""None: every location; ``"auto"``: Otsu's threshold on the first component; a float: that threshold."""


@dataclass(frozen=True)
class Foreground:
    """How a PCA tells foreground from background: the first principal direction of every location, its sign
    fixed so that the image border scores low, and a threshold above which a location is foreground."""

    mean: torch.Tensor
    direction: torch.Tensor
    threshold: float

    def score(self, rows: torch.Tensor) -> torch.Tensor:
        """Each row's projection on the direction (foreground where it is above :attr:`threshold`)."""
        return (rows - self.mean.to(rows)) @ self.direction.to(rows)


@dataclass(frozen=True)
class PCABasis:
    """A PCA fit, reusable on new images with ``pca(..., fit=basis)`` (the same colours across a folder or a
    video).

    Attributes:
        mean: ``(C,)`` the mean location the components are centred on.
        components: ``(k, C)`` unit principal directions, strongest first (scikit-learn's signs).
        explained_variance_ratio: ``(k,)`` the share of the fitted locations' variance each one explains.
        low, high: ``(k,)`` each component's minimum and maximum over the fitted locations: the colour scale.
        foreground: the foreground rule, or None when every location was fitted and shown.
        stage: the stage or layer it was fitted on.
    """

    mean: torch.Tensor
    components: torch.Tensor
    explained_variance_ratio: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    foreground: Foreground | None
    stage: str


@dataclass(frozen=True)
class PatchPCA:
    """Principal components of a stage's locations (see :func:`pca`).

    Attributes:
        components: ``(N, k, h, w)`` every location projected on the principal directions.
        rgb: ``(N, H, W, 3)`` uint8: the first three components as red, green and blue, scaled by the fit's
            ``low``/``high``, background black; ``(H, W)`` is ``size=`` when given, else ``(h, w)``.
        foreground: ``(N, h, w)`` bool, or None without a foreground rule.
        basis: the fit (:class:`PCABasis`); pass it as ``fit=`` to colour new images the same way.
        stage: the stage or layer.
    """

    components: torch.Tensor
    rgb: np.ndarray
    foreground: torch.Tensor | None
    basis: PCABasis
    stage: str


@dataclass(frozen=True)
class Similarity:
    """Cosine similarity of every location to one query location (see :func:`similarity`).

    Attributes:
        maps: ``(N, h, w)`` in ``[-1, 1]``, on the stage's grid.
        best: per image, the ``(row, col)`` most similar to the query (in the query's own image, the most
            similar other location).
        query: ``(image, row, col)`` as given.
        upsampled: ``(N, H, W)``: ``maps`` resized bilinearly to ``size=`` for display, else None.
        stage: the stage or layer.
    """

    maps: torch.Tensor
    best: list[tuple[int, int]]
    query: tuple[int, int, int]
    upsampled: torch.Tensor | None
    stage: str


def stage_grid(backbone, images: ImagesT, stage: str | None) -> tuple[str, torch.Tensor]:
    """``(name, (N, C, h, w) float map)`` of a stage or layer for ``images`` (or from captured maps).

    Raises:
        InvalidArgumentError: captured maps without that stage, or a map that is not a grid of the image
            (attention weights, windows folded into the batch, Hiera's unrolled tokens).
        LayerNotFoundError: no stage or layer of that name.
    """
    if stage is not None and not isinstance(stage, str):
        raise InvalidArgumentError(
            f"stage={shown(stage)} ({type(stage).__name__}); pass a stage name ({', '.join(backbone.stage_names)}) "
            "or a layer name from explorer.list_layers(bb)."
        )
    if isinstance(images, FeatureMaps):
        name = stage or next(reversed(images), None)
        if name not in images:
            raise InvalidArgumentError(
                f'The captured maps hold {shown(list(images))}, not "{name}". Capture it first: '
                f'bb.capture(pixel_values, layers=["{name}"]), or pass the images instead.'
            )
        maps = images
    else:
        name = stage or backbone.out_features[-1]
        if isinstance(images, torch.Tensor) and images.ndim == 4:
            pixel_values = images
        else:
            pixel_values = backbone.pixel_values(images)
        maps = backbone.capture(pixel_values, [name])
    if name in maps.unaligned:
        raise InvalidArgumentError(
            f'"{name}" is not a grid of locations on the image ({maps.unaligned[name]}). Pick a stage '
            f"({', '.join(backbone.stage_names)}) or a layer whose output is a spatial map."
        )
    fmap = maps[name]
    if fmap.ndim != 4 or fmap.shape[-2] * fmap.shape[-1] < 2:
        raise InvalidArgumentError(
            f'"{name}" gives a {tuple(fmap.shape)} map, with fewer than two locations per image. Pick an earlier '
            "stage, whose grid has several locations."
        )
    return name, fmap.float()


def _size(size: SizeT) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        side = whole("size", size, minimum=1, maximum=8192)
        return (side, side)
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return tuple(whole("size", side, minimum=1, maximum=8192) for side in size)
    raise InvalidArgumentError(
        f"size={shown(size)}; pass a side (224), a (height, width) pair, or None for the stage's own grid."
    )


def _rows(fmap: torch.Tensor) -> torch.Tensor:
    """``(N * h * w, C)``: one row per location, image by image, row-major within each."""
    return fmap.permute(0, 2, 3, 1).reshape(-1, fmap.shape[1])


_OVERSAMPLING = 20
"""Extra directions the randomized solver carries beyond those asked for (scikit-learn's ``n_oversamples``)."""
_POWER_ITERATIONS = 5
"""Products with the covariance in the randomized solver (each squares the spectrum's fall-off again)."""
_CONVERGED = 1e-3
"""The randomized solver's convergence bound under which its answer is kept (see :func:`_principal`)."""


def _principal(centred: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(k, C)`` unit principal directions of centred ``(locations, C)`` rows, strongest first, with
    scikit-learn's signs (each direction's largest entry positive), and their ``(k,)`` variances.

    Computed in torch on the rows' device and dtype. Where it is the cheaper one, randomized subspace
    iteration runs first (Halko et al. 2011, as scikit-learn's ``"auto"`` solver chooses for this shape):
    ``k +`` :data:`_OVERSAMPLING` seeded random directions, multiplied up to :data:`_POWER_ITERATIONS` times by
    the covariance (two thin products with the rows each, re-orthonormalised in channel space), and after each
    product rotated onto the eigenvectors of the covariance restricted to them (Rayleigh-Ritz: the product
    gives the restricted covariance at no extra pass over the rows), stopping as soon as that has converged. ``torch.svd_lowrank`` computes the
    same with a QR of the tall ``(locations, k + 10)`` matrix at every step, which costs more than the products
    here. The answer is kept only where its own eigenvalues show it converged: the k-th direction's error
    shrinks as ``(l[-1] / l[k-1]) ** iterations`` (checked after every product); below :data:`_CONVERGED` the eigenvalues agree with the
    exact ones to about 1e-4 (pretrained features, whose spectrum falls fast). Otherwise (a flat spectrum:
    random weights, noise) the exact answer, the eigenvectors of the ``(C, C)`` covariance, is computed.
    """
    locations, channels = centred.shape
    sketch = min(channels, k + _OVERSAMPLING)
    converged = False
    if sketch * (2 * _POWER_ITERATIONS + 1) < channels:
        generator = torch.Generator(centred.device).manual_seed(0)
        basis = torch.randn(channels, sketch, generator=generator, device=centred.device, dtype=centred.dtype)
        basis = torch.linalg.qr(basis).Q
        for iteration in range(_POWER_ITERATIONS + 1):  # basis: the start times the covariance ** iteration
            product = centred.T @ (centred @ basis)  # the covariance (times locations - 1) times the basis
            values, rotation = torch.linalg.eigh(basis.T @ product / (locations - 1))  # Rayleigh-Ritz, free
            ratio = float((values[0] / values[-k]).clamp_min(0))
            converged = ratio**iteration < _CONVERGED
            if (
                converged or ratio**_POWER_ITERATIONS >= _CONVERGED
            ):  # done, or never will be (a flat spectrum)
                break
            basis = torch.linalg.qr(product).Q
        directions, variances = (basis @ rotation).T.flip(0)[:k], values.flip(0)[:k]
    if not converged:
        variances, directions = torch.linalg.eigh(centred.T @ centred / (locations - 1))
        directions, variances = directions.T.flip(0)[:k], variances.flip(0)[:k]
    largest = directions.abs().argmax(1, keepdim=True)
    directions = directions * directions.gather(1, largest).sign()
    return directions, variances


def _border(shape: tuple[int, int, int]) -> torch.Tensor:
    """``(N, h, w)`` bool: the locations on each image's border."""
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[:, 0, :] = mask[:, -1, :] = mask[:, :, 0] = mask[:, :, -1] = True
    return mask


def _foreground_rule(rows: torch.Tensor, grid: tuple[int, int, int], foreground: str | float) -> Foreground:
    """Pass one of the DINOv2 recipe: the first component over every location, the border made background."""
    from skimage.filters import threshold_otsu

    mean = rows.mean(0)
    centred = rows - mean
    direction = _principal(centred, 1)[0][0]
    score = (centred @ direction).reshape(grid).cpu()
    if score[_border(grid)].mean() > score.mean():  # the border is background: it must score low
        direction, score = -direction, -score
    if foreground == "auto":
        threshold = float(threshold_otsu(score.numpy()))
    else:
        threshold = real("foreground", foreground, hint='pass None, "auto" (Otsu) or a float threshold.')
    return Foreground(mean, direction, threshold)


def _check_fit(fit: object, channels: int, foreground: ForegroundT) -> PCABasis:
    if not isinstance(fit, PCABasis):
        raise InvalidArgumentError(
            f"fit={shown(fit)} ({type(fit).__name__}); pass the .basis of an earlier explorer.pca() result."
        )
    if fit.mean.shape[0] != channels:
        raise InvalidArgumentError(
            f"fit was made on {fit.mean.shape[0]} channels ({fit.stage}), but this stage has {channels}. Reuse a "
            "fit only on the stage (and backbone) it was made on."
        )
    if foreground is not None:
        raise InvalidArgumentError(
            "foreground= cannot change a fit's foreground rule; pass fit= alone (its rule is reused), or fit "
            "again with the new foreground."
        )
    return fit


def _fit(
    rows: torch.Tensor, grid: tuple[int, int, int], k: int, foreground: ForegroundT, stage: str
) -> PCABasis:
    rule = None if foreground is None else _foreground_rule(rows, grid, foreground)
    fitted = rows if rule is None else rows[rule.score(rows) > rule.threshold]
    if fitted.shape[0] <= k:
        raise InvalidArgumentError(
            f"Only {fitted.shape[0]} foreground locations for {k} components. Lower the foreground threshold, "
            "pass foreground=None, or give more (or larger) images."
        )
    mean = fitted.mean(0)
    centred = fitted - mean
    components, variances = _principal(centred, k)
    total = torch.linalg.vector_norm(centred) ** 2 / (fitted.shape[0] - 1)  # every channel's variance, summed
    projected = centred @ components.T
    return PCABasis(
        mean=mean,
        components=components,
        explained_variance_ratio=(variances / total).float().cpu(),
        low=projected.amin(0),
        high=projected.amax(0),
        foreground=rule,
        stage=stage,
    )


def _project(fmap: torch.Tensor, mean: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """``(N, k, h, w)``: every location of an NCHW map, centred on ``mean``, projected on ``(k, C)``
    directions; read in place (no transposed copy of the map)."""
    directions = directions.to(fmap)
    offset = directions @ mean.to(fmap)
    # (k, C) @ (N, C, h*w): a batched product over a view of the map (einsum's path here is ten times slower)
    projected = (directions @ fmap.flatten(2)).unflatten(2, fmap.shape[-2:])
    return projected - offset[None, :, None, None]


def _colours(components: torch.Tensor, basis: PCABasis, mask: torch.Tensor | None, size) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 from the first three components, scaled by the fit's range, background black."""
    k = min(3, components.shape[1])
    low, high = (bound[:k].to(components).view(1, k, 1, 1) for bound in (basis.low, basis.high))
    scaled = ((components[:, :k] - low) / (high - low).clamp_min(1e-12)).clamp(0, 1)
    if k < 3:  # fewer than three components: the missing colours stay dark
        scaled = F.pad(scaled, (0, 0, 0, 0, 0, 3 - k))
    if mask is not None:
        scaled = scaled * mask[:, None].to(scaled)
    if size is not None and tuple(size) != tuple(scaled.shape[-2:]):
        scaled = F.interpolate(scaled, size=size, mode="bilinear", align_corners=False)
    return (scaled * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def pca(
    backbone,
    images: ImagesT,
    stage: str | None = None,
    n_components: int = 3,
    foreground: ForegroundT = None,
    fit: PCABasis | None = None,
    size: SizeT = None,
) -> PatchPCA:
    """Principal components of a stage's locations, fitted jointly over every location of every image.

    The fit is a PCA (float32, in torch on the map's device; scikit-learn's ``PCA`` is its test oracle) of the
    ``(N * h * w, C)`` table of locations, centred on their mean and not standardised (no per-channel scaling:
    channels keep their own variance, as in the DINOv2 figure). Where the spectrum falls fast (pretrained
    features) a randomized solver finds the leading directions in a few passes; elsewhere the covariance's
    exact eigenvectors are used (see ``_principal``).
    Colours: each of the first three components is scaled from its minimum to its maximum over the fitted
    locations (kept in the fit, so ``fit=`` gives new images the same colours), clipped, and shown as red,
    green and blue; background locations are black.

    Foreground (the DINOv2 two-pass recipe): a first PCA over every location gives one direction, its sign
    fixed so that the image border scores below the rest; locations above the threshold (Otsu's, or a given
    float, on that score) are foreground, and the second PCA is fitted on them only.

    Args:
        backbone: a :class:`~explorer.Backbone`.
        images: images, a ``(B, 3, H, W)`` tensor of ``pixel_values``, or captured
            :class:`~explorer.FeatureMaps` holding ``stage`` (no forward pass).
        stage: a stage name or any layer of :func:`~explorer.list_layers`; None: the last selected stage (with
            captured maps: the last map).
        n_components: how many components to keep (1 to the channel count).
        foreground: None (fit and show every location), ``"auto"`` (Otsu) or a float threshold.
        fit: a :class:`PCABasis` from an earlier call: project with it instead of fitting (its foreground rule
            comes with it, so ``foreground`` must be None).
        size: resize ``rgb`` to this for display (bilinear); components stay on the stage's grid.

    Returns:
        A :class:`PatchPCA`.

    Raises:
        InvalidArgumentError: a bad count, threshold, size or fit; too few foreground locations.
        LayerNotFoundError: no stage or layer of that name.

    Example::

        >>> photos = list(explorer.sample_images().values())[:4]
        >>> pv = pca(bb, photos, stage="blocks.4", foreground="auto", size=224)
        >>> pv.components.shape, pv.rgb.shape, pv.basis.explained_variance_ratio.shape
        (torch.Size([4, 3, 14, 14]), (4, 224, 224, 3), torch.Size([3]))
        >>> more_photos = list(explorer.sample_images().values())[4:6]
        >>> pca(bb, more_photos, stage="blocks.4", fit=pv.basis).rgb.shape     # the same colours
        (2, 14, 14, 3)
    """
    _backbone(backbone, call="explorer.pca(bb, images)")
    if foreground is not None and foreground != "auto":
        real("foreground", foreground, hint='pass None, "auto" (Otsu) or a float threshold.')
    display = _size(size)
    name, fmap = stage_grid(backbone, images, stage)
    batch, channels, height, width = fmap.shape
    if fit is None:
        rows = _rows(fmap)
        k = whole("n_components", n_components, minimum=1, maximum=min(channels, rows.shape[0] - 1))
        basis = _fit(rows, (batch, height, width), k, foreground, name)
    else:
        basis = _check_fit(fit, channels, foreground)
    components = _project(fmap, basis.mean, basis.components)
    mask = None
    if basis.foreground is not None:
        rule = basis.foreground
        mask = _project(fmap, rule.mean, rule.direction[None])[:, 0] > rule.threshold
    return PatchPCA(components, _colours(components, basis, mask, display), mask, basis, name)


def _query(query: object, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    batch, height, width = shape
    if not isinstance(query, (tuple, list)) or len(query) != 3:
        raise InvalidArgumentError(
            f"query={shown(query)}; pass (image, row, col), for example (0, 5, 7): image 0, row 5, column 7 of "
            f"the {height}x{width} grid."
        )
    names = ("image", "row", "col")
    return tuple(
        whole(
            f"query {label}",
            value,
            minimum=0,
            maximum=limit - 1,
            hint=f" The grid is {batch}x{height}x{width}.",
        )
        for label, value, limit in zip(names, query, shape)
    )


def similarity(
    backbone,
    images: ImagesT,
    stage: str | None = None,
    query: tuple[int, int, int] = (0, 0, 0),
    size: SizeT = None,
) -> Similarity:
    """Cosine similarity of every location of every image to one query location's feature.

    Computed on the stage's grid (each location's C-vector, L2-normalised); ``size=`` adds a bilinear
    upsampling of the maps for display, as DIFT shows its correspondences. Each image's best match is its
    most similar location; in the query's own image the query location itself is left out (it would always
    win), so there it is the closest other location (repeated structure).

    Args:
        backbone: a :class:`~explorer.Backbone`.
        images: images, a ``(B, 3, H, W)`` tensor of ``pixel_values``, or captured
            :class:`~explorer.FeatureMaps` holding ``stage`` (no forward pass).
        stage: a stage name or any layer of :func:`~explorer.list_layers`; None: the last selected stage.
        query: ``(image, row, col)``: an image index and a location on the stage's grid.
        size: also give ``upsampled`` maps of this size (a side or ``(height, width)``).

    Returns:
        A :class:`Similarity`.

    Raises:
        InvalidArgumentError: a query outside the images or the grid, a bad size.
        LayerNotFoundError: no stage or layer of that name.

    Example::

        >>> photos = list(explorer.sample_images().values())[:4]
        >>> sim = similarity(bb, photos, stage="blocks.4", query=(0, 5, 7), size=224)
        >>> sim.maps.shape, sim.upsampled.shape, sim.best[0]
        (torch.Size([4, 14, 14]), torch.Size([4, 224, 224]), (4, 7))
    """
    _backbone(backbone, call="explorer.similarity(bb, images, query=(0, row, col))")
    display = _size(size)
    name, fmap = stage_grid(backbone, images, stage)
    batch, _, height, width = fmap.shape
    image, row, col = _query(query, (batch, height, width))
    query_feature = fmap[image, :, row, col]
    # each location's L2 norm, as F.normalize takes it but without a normalised copy of the map; summed squares
    # over the channel axis (linalg.vector_norm's strided reduction over it is ten times slower on a 112x112 grid)
    norms = (fmap * fmap).sum(1).sqrt().clamp_min(1e-12)
    maps = torch.einsum("nchw,c->nhw", fmap, query_feature) / (norms * norms[image, row, col])
    ranked = maps.clone()
    ranked[image, row, col] = -torch.inf  # the query itself does not count as its own image's match
    flat = ranked.flatten(1).argmax(1).tolist()
    best = [(index // width, index % width) for index in flat]
    upsampled = None
    if display is not None:
        upsampled = F.interpolate(maps[:, None], size=display, mode="bilinear", align_corners=False)[:, 0]
    return Similarity(maps, best, (image, row, col), upsampled, name)
