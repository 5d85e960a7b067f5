"""Static figures of the patch views (:func:`~explorer.pca`, :func:`~explorer.similarity`,
:func:`~explorer.attention`) as matplotlib ``Figure`` objects (object API only), the images under the maps.

Example::

    >>> fig = similarity_figure(explorer.similarity(bb, [cat], stage="blocks.3", query=(0, 5, 7)))
    >>> fig.savefig("similarity.png")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ._args import shown
from .errors import InvalidArgumentError
from .figure_pages import page_options, panel_figure
from .vocabulary import MAP_CMAP, OVERLAY_CMAP, colormap_name

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .attention_maps import Attention
    from .patch_views import PatchPCA, Similarity

__all__ = ["attention_figure", "patch_pca_figure", "similarity_figure"]


def _result(result: object, kind: type, maker: str) -> None:
    if not isinstance(result, kind):
        raise InvalidArgumentError(
            f"result={shown(result)} ({type(result).__name__}); pass the {kind.__name__} that {maker} returns."
        )


def _views(images: object, count: int) -> list[np.ndarray] | None:
    """The images drawn under the maps, read as :func:`~explorer.load_image` reads any image: one per map."""
    from .images import load_image

    if images is None:
        return None
    if not isinstance(images, Sequence) or isinstance(images, (str, bytes)) or len(images) != count:
        raise InvalidArgumentError(
            f"images={shown(images)}; pass a list of {count} images (one per map, as the model saw them: "
            "explorer.model_view(image, bb.preprocess)), or None."
        )
    return [np.asarray(load_image(image)) for image in images]


def patch_pca_figure(
    result: PatchPCA,
    images: Sequence | None = None,
    *,
    title: str | None = None,
    width: float = 10.0,
    dpi: int = 100,
) -> Figure:
    """PCA colours of every image (under the images, when given), with a colour bar per component.

    Args:
        result: :func:`~explorer.pca` output.
        images: the images as the model saw them (``explorer.model_view(image, bb.preprocess)``), drawn above.
        title: the figure title; by default the stage and the variance the three components explain.

    Example::

        >>> images = [photos["chelsea"], photos["coffee"]]
        >>> views = [model_view(image, bb.preprocess) for image in images]
        >>> fig = patch_pca_figure(explorer.pca(bb, images, stage="blocks.5"), views)
        >>> fig.savefig("pca.png")
    """
    import matplotlib
    from matplotlib.colors import LinearSegmentedColormap, Normalize

    from .patch_views import PatchPCA

    _result(result, PatchPCA, "explorer.pca()")
    title, width, dpi = page_options(title, width, dpi)
    count = result.rgb.shape[0]
    views = _views(images, count)
    rows = 2 if views is not None else 1
    figure, axes = panel_figure(count, width, dpi, rows)
    for index in range(count):
        if views is not None:
            axes[0, index].imshow(views[index])
        axes[-1, index].imshow(result.rgb[index], interpolation="nearest")
    basis = result.basis
    for k in range(min(3, basis.components.shape[0])):
        colour = [(0, 0, 0), tuple(1.0 if c == k else 0.0 for c in range(3))]
        mappable = matplotlib.cm.ScalarMappable(
            norm=Normalize(float(basis.low[k]), float(basis.high[k])),
            cmap=LinearSegmentedColormap.from_list(f"pc{k}", colour),
        )
        share = float(basis.explained_variance_ratio[k])
        bar = figure.colorbar(mappable, ax=axes[-1, :].tolist(), shrink=0.9, pad=0.01, aspect=15)
        bar.set_label(f"PC{k + 1} ({share:.0%})")
    masked = " (foreground fit)" if result.foreground is not None else ""
    shares = float(basis.explained_variance_ratio[:3].sum())
    figure.suptitle(title or f"PCA of {result.stage}{masked}: first 3 components explain {shares:.0%}")
    return figure


def similarity_figure(
    result: Similarity,
    images: Sequence | None = None,
    *,
    title: str | None = None,
    cmap: str = OVERLAY_CMAP,
    width: float = 10.0,
    dpi: int = 100,
) -> Figure:
    """Cosine-similarity maps of every image over the image, the query circled and each best match crossed.

    Args:
        result: :func:`~explorer.similarity` output.
        images: the images as the model saw them, drawn under the maps (each map stretched over its image).
        title: the figure title; by default the stage and the query.
        cmap: a matplotlib colour map; :data:`~explorer.render.OVERLAY_CMAP` by default (heat over a photo).

    Example::

        >>> images = [photos["chelsea"], photos["coffee"]]
        >>> views = [model_view(image, bb.preprocess) for image in images]
        >>> fig = similarity_figure(explorer.similarity(bb, images, stage="blocks.4", query=(0, 5, 7)), views)
        >>> len(fig.axes)                            # a map per image and the colour bar
        3
    """
    import matplotlib
    from matplotlib.colors import Normalize

    from .patch_views import Similarity

    _result(result, Similarity, "explorer.similarity()")
    title, width, dpi = page_options(title, width, dpi)
    cmap = colormap_name(cmap)
    maps = result.maps.float().cpu().numpy()
    count, height, width_cells = maps.shape
    views = _views(images, count)
    low, high = float(maps.min()), float(maps.max())
    figure, axes = panel_figure(count, width, dpi)
    query_image, query_row, query_col = result.query
    for index in range(count):
        axis = axes[0, index]
        extent = (-0.5, width_cells - 0.5, height - 0.5, -0.5)  # cell centres at integer positions
        alpha = 1.0
        if views is not None:
            axis.imshow(views[index], extent=extent)
            alpha = 0.6
        axis.imshow(
            maps[index], cmap=cmap, vmin=low, vmax=high, alpha=alpha, extent=extent, interpolation="bilinear"
        )
        row, col = result.best[index]
        axis.plot(col, row, marker="x", color="cyan", markersize=10, markeredgewidth=2.5)
        if index == query_image:
            axis.plot(
                query_col, query_row, marker="o", markerfacecolor="none", color="lime", markersize=12, mew=2.5
            )
        axis.set_title(f"image {index}: best ({row}, {col})", fontsize=9)
    mappable = matplotlib.cm.ScalarMappable(norm=Normalize(low, high), cmap=matplotlib.colormaps[cmap])
    figure.colorbar(mappable, ax=axes[0, :].tolist(), shrink=0.9, pad=0.01).set_label("cosine similarity")
    figure.suptitle(
        title
        or f"Similarity to image {query_image}, row {query_row}, column {query_col} at {result.stage} "
        "(o query, x best match)"
    )
    return figure


def attention_figure(
    result: Attention,
    image=None,
    *,
    title: str | None = None,
    cmap: str = MAP_CMAP,
    width: float = 12.0,
    dpi: int = 100,
) -> Figure:
    """The class token's attention per head (and the rollout, when computed), with a colour bar.

    Each head's panel says what share went to the prefix tokens instead of the patches.

    Args:
        result: :func:`~explorer.attention` output.
        image: the image as the model saw it, drawn first.
        title: the figure title; by default the block.
        cmap: a matplotlib colour map; :data:`~explorer.render.MAP_CMAP` by default (the maps are drawn on their
            own, beside the image).

    Example::

        >>> vit = explorer.load_backbone("vit_tiny_patch16_224", pretrained=False)
        >>> fig = attention_figure(explorer.attention(vit, cat, rollout=True), model_view(cat, vit.preprocess))
        >>> fig.savefig("attention.png")
    """
    import matplotlib
    from matplotlib.colors import Normalize

    from .attention_maps import Attention

    _result(result, Attention, "explorer.attention()")
    title, width, dpi = page_options(title, width, dpi)
    cmap = colormap_name(cmap)
    view = None if image is None else _views([image], 1)[0]
    maps = result.maps.float().cpu().numpy()
    heads = maps.shape[0]
    panels = [("image", None)] if view is not None else []
    panels += [(f"head {h}: {float(result.prefix_share[h]):.0%} to prefix", maps[h]) for h in range(heads)]
    if result.rollout is not None:
        panels.append(("rollout (own scale)", result.rollout.float().cpu().numpy()))
    columns = min(len(panels), 7)
    rows = -(-len(panels) // columns)
    figure, axes = panel_figure(columns, width, dpi, rows)
    low, high = float(maps.min()), float(maps.max())
    for axis, (label, values) in zip(axes.flat, panels):
        if values is None:
            axis.imshow(view)
        elif label.startswith("rollout"):
            axis.imshow(values, cmap=cmap, interpolation="nearest")
        else:
            axis.imshow(values, cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
        axis.set_title(label, fontsize=8)
    mappable = matplotlib.cm.ScalarMappable(norm=Normalize(low, high), cmap=matplotlib.colormaps[cmap])
    figure.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.8, pad=0.01).set_label(
        "class token's attention"
    )
    prefix = ", ".join(result.prefix_tokens)
    figure.suptitle(title or f"Class-token attention at {result.block} (prefix tokens: {prefix})")
    return figure
