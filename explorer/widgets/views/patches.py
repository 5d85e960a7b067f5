"""The Patches tab: what a stage's locations know, in three modes (the state's ``patch_mode``).

- **PCA**: :func:`explorer.pca` colours of every gallery image side by side, fitted jointly over the gallery
  (once per checkpoint, stage and gallery; redraws reuse it), under the images themselves.
- **Similarity**: :func:`explorer.similarity` of every location of every gallery image to the query location
  (``patch_query``: image, row, col on the stage's grid), one map per image on a fixed ``-1`` to ``1`` scale; the
  query and each image's best match are outlined. A click on an image, its PCA colours or its map sets the query
  (a click in PCA mode also switches to Similarity).
- **Attention**: :func:`explorer.attention` of a ViT for the image on show, at ``attention_block``, one head
  (``attention_head``) or the mean over heads, and optionally the rollout (``attention_rollout``); it runs the
  model, in the engine's worker. A model without attention (a CNN) says so, pointing to Similarity, on the tab's
  status line and the panel's, and shows nothing else; nothing is reverted and the other modes and tabs keep
  working.

PCA and similarity read the panel's captures (the maps of each gallery image, captured once per checkpoint and
image: the image on show reuses the panel's own capture, and a camera frame runs the model on itself only), so
changing mode, query, stage or colours runs no model.

Example::

    >>> app = explorer.Explorer(display=False)
    >>> app.tab = "Patches"                          # PCA colours of the gallery
    >>> app.patch_mode = "similarity"; app.patch_query = (0, 3, 4)
    >>> app.views["Patches"].result.maps.shape       # one map per gallery image (an explorer.Similarity)
    torch.Size([6, 112, 112])
    >>> exec(app.code()); png == app.png
    True
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import ipywidgets as widgets
from traitlets import TraitError

from ..elements import ImageView
from ..engine import Frame, Scene
from . import View, register
from .html import status_html
from .images import colorbar, geometry

__all__ = ["PatchesData", "PatchesView", "TILE"]

TILE = 160
"""The longest side of each image's tile, in pixels (a whole multiple of the stage's grid, at most this)."""

MODES = (("PCA", "pca"), ("Similarity", "similarity"), ("Attention", "attention"))


@dataclass(frozen=True, eq=False)
class PatchesData:
    """What the Patches tab shows: the mode's picture (``png``, the bytes :meth:`PatchesView.code` binds) with its
    geometry (for clicks and hover), colour bar and outlined locations; the images (``images``, JPEG) in the same
    geometry; the library result (``result``); the choices to offer; and the tab's status line."""

    mode: str
    png: bytes
    grid: dict
    bar: dict
    marks: tuple[tuple[int, int, int, str], ...]
    images: bytes
    title: str
    message: tuple[str, str]  # (kind, HTML)
    result: object = None
    refusal: str = ""  # plain text for the panel's status line: a mode this model cannot show
    basis: object = None  # the PCA fit
    query: tuple[int, int, int] | None = None
    values: object = None  # (tiles, h, w) values under the pointer: the similarity or attention maps
    tiles: tuple[str, ...] = ()  # what the attention grid's tiles are ("mean", "head 3", "rollout")
    blocks: tuple[str, ...] = ()
    heads: int = 0
    block: str = ""


def _scale(grid: tuple[int, int]) -> int:
    return max(1, TILE // max(grid))


def _gallery_maps(scene: Scene):
    """The maps of every gallery image, captured image by image and each kept by its own key (checkpoint,
    image, maps), then joined: a new image (a camera frame replacing the last) runs the model on itself only,
    and the image on show reuses the panel's own capture."""
    import torch

    from ...hooks import FeatureMaps

    s, gallery = scene.state, scene.gallery

    def running() -> None:
        scene.progress(f"Running the model on the {len(gallery)} gallery images...", 2, 4)

    def one(image, key):
        return scene.runtime.capture(
            scene.backbone_key[0], scene.backbone, [image], [key], list(s.layers), running
        )

    def join() -> FeatureMaps:
        each = [
            scene.keyed(
                ("gallery-image", scene.backbone_key, key, tuple(s.layers)), lambda i=i, k=key: one(i, k)
            )
            for i, key in zip(gallery.images, gallery.keys)
        ]
        return FeatureMaps({n: torch.cat([m[n] for m in each]) for n in each[0]}, unaligned=each[0].unaligned)

    return scene.keyed(("gallery-maps", scene.backbone_key, gallery.keys, tuple(s.layers)), join)


def _images_strip(scene: Scene, tile: tuple[int, int]) -> bytes:
    """The gallery as the model saw it, each image resized to ``tile`` (each kept by its key), side by side
    (JPEG)."""
    import numpy as np
    from PIL import Image

    from ..engine.runtime import model_view
    from .images import jpeg

    def view(image) -> np.ndarray:
        return np.asarray(model_view(image, scene.backbone.preprocess).resize(tile[::-1], Image.BILINEAR))

    def draw() -> bytes:
        views = [
            scene.keyed(("patch-image", scene.backbone_key, key, tile), lambda i=image: view(i))
            for image, key in zip(scene.gallery.images, scene.gallery.keys)
        ]
        return jpeg(np.hstack(views))

    return scene.keyed(("patch-images", scene.backbone_key, scene.gallery.keys, tile), draw)


def _strip_geometry(count: int, tile: tuple[int, int], grid: tuple[int, int]) -> dict:
    return {
        "cols": count,
        "tile": list(tile),
        "pad": 0,
        "channels": list(range(count)),
        "map": list(grid),
        "unit": "image",
    }


def _query(query: tuple[int, int, int] | None, count: int, grid: tuple[int, int]) -> tuple[int, int, int]:
    """The query on this gallery and grid: the centre of image 0 when None, else clamped (a smaller grid after
    a stage change keeps the query inside)."""
    if query is None:
        return (0, grid[0] // 2, grid[1] // 2)
    return (min(query[0], count - 1), min(query[1], grid[0] - 1), min(query[2], grid[1] - 1))


def _pca(scene: Scene, maps, grid: tuple[int, int], tile: tuple[int, int], images: bytes) -> PatchesData:
    import numpy as np

    from ...patch_views import pca
    from ...render import to_png

    s, keys = scene.state, scene.gallery.keys
    result = scene.keyed(  # fitted and coloured in one call: a camera frame changes the gallery every time
        ("pca", scene.backbone_key, s.stage, keys, tile),
        lambda: pca(scene.backbone, maps, stage=s.stage, size=tile),
    )
    basis = result.basis
    png = scene.keyed(
        ("pca-png", scene.backbone_key, s.stage, keys, tile), lambda: to_png(np.hstack(result.rgb))
    )
    shares = ", ".join(f"{share:.0%}" for share in basis.explained_variance_ratio.tolist())
    count = len(keys)
    message = (
        f"PCA of <b>{html.escape(s.stage)}</b>'s locations, fitted jointly over the {count} gallery image(s): "
        f"components 1-3 as red, green, blue (they explain {shares} of the variance). Click a location to see "
        "what resembles it."
    )
    return PatchesData(
        "pca",
        png,
        _strip_geometry(count, tile, grid),
        {},
        (),
        images,
        f"{s.stage} · PCA colours ({grid[0]}x{grid[1]} grid)",
        ("ok", message),
        result=result,
        basis=basis,
    )


def _similarity(
    scene: Scene, maps, grid: tuple[int, int], tile: tuple[int, int], images: bytes
) -> PatchesData:
    from ...patch_views import similarity
    from ...render import render_grid
    from ..engine import Grid

    s, keys = scene.state, scene.gallery.keys
    count = len(keys)
    query = _query(s.patch_query, count, grid)
    result = scene.keyed(
        ("similarity", scene.backbone_key, s.stage, keys, query),
        lambda: similarity(scene.backbone, maps, stage=s.stage, query=query),
    )
    options = similarity_options(count, grid, s.cmap)

    def draw() -> Grid:
        array, layout = render_grid(result.maps, return_layout=True, **options)
        return Grid(array, layout, s.stage, tuple(options.items()))

    drawn = scene.keyed(("similarity-grid", scene.backbone_key, s.stage, keys, query, s.cmap), draw)
    image, row, col = query
    marks = ((image, row, col, "query"),) + tuple((i, r, c, "best") for i, (r, c) in enumerate(result.best))
    message = (
        f"Cosine similarity at <b>{html.escape(s.stage)}</b> to image {image}'s location ({row}, {col}) (red); "
        "each image's best match in yellow. Click a location to compare another."
    )
    return PatchesData(
        "similarity",
        drawn.png,
        {**geometry(drawn), "unit": "image"},
        colorbar(drawn),
        marks,
        images,
        f"{s.stage} · similarity to image {image} ({row}, {col})",
        ("ok", message),
        result=result,
        query=query,
        values=result.maps,
    )


def similarity_options(count: int, grid: tuple[int, int], cmap: str) -> dict:
    """The :func:`~explorer.render_grid` arguments of the similarity maps: one row, a fixed -1 to 1 scale, the
    tiles the size of the images'."""
    return dict(
        channels=list(range(count)),
        norm="global",
        vrange=(-1.0, 1.0),
        cmap=cmap,
        cols=count,
        pad=0,
        scale=_scale(grid),
        max_size=None,
    )


def _attention(scene: Scene) -> PatchesData:
    from ...attention_maps import attention
    from ...errors import AttentionError
    from ...render import overlay, render_grid
    from ..engine import Grid
    from .images import jpeg

    s = scene.state
    blocks = tuple(scene.backbone.attention_blocks())
    try:
        if not blocks:  # no model run: the library refuses before reading, with its advice
            attention(scene.backbone, scene.image)
    except AttentionError as err:
        message = html.escape(str(err))
        return PatchesData("attention", b"", {}, {}, (), b"", "", ("error", message), refusal=str(err))
    notes = []
    block = s.attention_block or blocks[-1]
    if block not in blocks:
        notes.append(f"{html.escape(block)} is not a block of this model: the last is shown.")
        block = blocks[-1]
    key = ("attention", scene.backbone_key, scene.image_key, block, s.attention_rollout)

    def run():
        scene.progress(f"Reading the attention of {html.escape(block)}...", 3, 4)
        scene.runtime.count_run()
        return attention(scene.backbone, scene.image, block=block, rollout=s.attention_rollout)

    result = scene.keyed(key, run)
    heads = result.maps.shape[0]
    head = s.attention_head
    if head is not None and head >= heads:
        notes.append(f"head {head} does not exist ({heads} heads, 0-{heads - 1}): the mean is shown.")
        head = None
    tiles = ["mean" if head is None else f"head {head}"] + (["rollout"] if result.rollout is not None else [])
    options = dict(channels=list(range(len(tiles))), norm="channel", cmap=s.cmap, pad=2, max_size=TILE * 2)

    def draw() -> Grid:
        stack = attention_tiles(result, head)
        array, layout = render_grid(stack, return_layout=True, **options)
        return Grid(array, layout, block, tuple(options.items()))

    drawn = scene.keyed((*key, head, s.cmap), draw)
    chosen = attention_tiles(result, head)[0]
    over = scene.keyed(
        (*key, head, s.cmap, s.alpha, "overlay"),
        lambda: jpeg(
            overlay(scene.image, chosen, alpha=s.alpha, cmap=s.cmap, preprocess=scene.backbone.preprocess)
        ),
    )
    share = float(result.prefix_share.mean() if head is None else result.prefix_share[head])
    prefix = ", ".join(result.prefix_tokens)
    message = (
        f"Class-token attention at <b>{html.escape(block)}</b> ({'mean over ' + str(heads) + ' heads' if head is None else f'head {head} of {heads}'}"
        f"{', and rollout' if result.rollout is not None else ''}): {share:.1%} of it goes to the prefix tokens "
        f"({html.escape(prefix)}), the rest to the patches shown. " + " ".join(notes)
    )
    return PatchesData(
        "attention",
        drawn.png,
        geometry(drawn),
        colorbar(drawn),
        (),
        over,
        f"{block} · " + " | ".join(tiles),
        ("warn" if notes else "ok", message),
        result=result,
        values=attention_tiles(result, head),
        tiles=tuple(tiles),
        blocks=blocks,
        heads=heads,
        block=block,
    )


def attention_tiles(result, head: int | None):
    """``(k, h, w)``: the head's map (the mean over heads for None), and the rollout when it was computed."""
    import torch

    chosen = result.maps.mean(0) if head is None else result.maps[head]
    return torch.stack([chosen] + ([result.rollout] if result.rollout is not None else []))


@register
class PatchesView(View):
    title = "Patches"

    def __init__(self, controls) -> None:
        super().__init__(controls)
        self.mode_buttons = widgets.ToggleButtons(options=MODES, layout=widgets.Layout(width="auto"))
        self.mode_buttons.style.button_width = "90px"
        self.block_box = widgets.Dropdown(
            description="Block", options=[("last", "")], layout=widgets.Layout(width="220px")
        )
        self.head_box = widgets.Dropdown(
            description="Head", options=[("mean", None)], layout=widgets.Layout(width="180px")
        )
        self.rollout_box = widgets.Checkbox(
            description="Rollout", indent=False, layout=widgets.Layout(width="100px")
        )
        self.attention_controls = widgets.HBox(
            [self.block_box, self.head_box, self.rollout_box], layout=widgets.Layout(display="none")
        )
        self.patch_status = widgets.HTML(status_html("busy", "Drawing..."))
        self.images_view = ImageView(clickable=True, on_pick=self._pick)
        self.images_view.add_class("explorer-patch-images")
        self.patches_view = ImageView(clickable=True, on_pick=self._pick, value_at=self._value)
        self.patches_view.add_class("explorer-patches")
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.mode_buttons, self.attention_controls]),
                self.patch_status,
                self.images_view,
                self.patches_view,
            ]
        )
        controls.link("patch_mode", self.mode_buttons)
        self.block_link = controls.link("attention_block", self.block_box)
        self.head_link = controls.link("attention_head", self.head_box)
        controls.link("attention_rollout", self.rollout_box)
        self.result = None  # the library's result on show (PatchPCA, Similarity or Attention)
        self._shown: PatchesData | None = None

    def _pick(self, image: int, row: int, col: int) -> None:
        """A click on an image, its colours or its map: that location is the query (shown in Similarity mode)."""
        state = self.controls.state
        if state.patch_mode == "attention" or image < 0:
            return
        try:
            with state.hold_trait_notifications():
                state.patch_query = (image, row, col)
                state.patch_mode = "similarity"
        except TraitError as err:
            self.controls.report(err)

    def _value(self, tile: int, row: int, col: int) -> float:
        values = self._shown.values if self._shown is not None else None
        if values is None:
            raise ValueError("no values on show")  # PCA colours: the pointer shows the location only
        return float(values[tile, row, col])

    @staticmethod
    def compute(scene: Scene) -> PatchesData:
        s = scene.state
        if s.patch_mode == "attention":
            return _attention(scene)
        unaligned = scene.maps.unaligned.get(s.stage)
        if unaligned:
            message = (
                f"<b>{html.escape(s.stage)}</b> is not a grid of locations on the image ({html.escape(unaligned)}): "
                "choose a stage in Show."
            )
            return PatchesData(s.patch_mode, b"", {}, {}, (), b"", "", ("warn", message))
        maps = _gallery_maps(scene)
        grid = tuple(maps[s.stage].shape[-2:])
        scale = _scale(grid)
        tile = (grid[0] * scale, grid[1] * scale)
        images = _images_strip(scene, tile)
        if s.patch_mode == "pca":
            return _pca(scene, maps, grid, tile, images)
        return _similarity(scene, maps, grid, tile, images)

    @staticmethod
    def code(frame: Frame, data: PatchesData) -> tuple[list[str], list[int], bytes] | None:
        if not data.png:
            return None
        s = frame.state
        everything = list(range(len(frame.gallery)))
        capture = f"maps = bb.capture(bb.pixel_values(images), layers={list(frame.maps)!r})"
        if data.mode == "pca":
            size = tuple(data.grid["tile"])
            return (
                [
                    capture,
                    f"pv = explorer.pca(bb, maps, stage={s['stage']!r}, size={size!r})",
                    "png = explorer.to_png(np.hstack(pv.rgb))",
                ],
                everything,
                data.png,
            )
        if data.mode == "similarity":
            grid = tuple(data.grid["map"])
            options = similarity_options(len(everything), grid, s["cmap"])
            arguments = ", ".join(f"{k}={v!r}" for k, v in options.items())
            return (
                [
                    capture,
                    f"sim = explorer.similarity(bb, maps, stage={s['stage']!r}, query={data.query!r})",
                    f"png = explorer.to_png(explorer.render_grid(sim.maps, {arguments}))",
                ],
                everything,
                data.png,
            )
        result = data.result
        head = None if data.tiles[0] == "mean" else int(data.tiles[0].split()[1])
        chosen = "att.maps.mean(0)" if head is None else f"att.maps[{head}]"
        stack = f"[{chosen}, att.rollout]" if result.rollout is not None else f"[{chosen}]"
        return (
            [
                f"att = explorer.attention(bb, images[0], block={data.block!r}, rollout={result.rollout is not None})",
                f"tiles = torch.stack({stack})",
                f"png = explorer.to_png(explorer.render_grid(tiles, channels={list(range(len(data.tiles)))!r}, "
                f"norm='channel', cmap={s['cmap']!r}, pad=2, max_size={TILE * 2}))",
            ],
            [s["image_index"]],
            data.png,
        )

    def update(self, frame: Frame) -> None:
        data = self.data(frame)
        mode = frame.state.get("patch_mode", "pca")
        self.attention_controls.layout.display = "" if mode == "attention" else "none"
        if data is None or data is self._shown:
            return
        self._shown, self.result = data, data.result
        self.patch_status.value = status_html(*data.message)
        if data.mode == "attention" and data.blocks:
            self.block_link.set_options([("last", "")] + [(name, name) for name in data.blocks])
            self.head_link.set_options([("mean", None)] + [(str(h), h) for h in range(data.heads)])
        self.images_view.clickable = self.patches_view.clickable = data.mode != "attention"
        self.patches_view.show(
            data.png,
            "png",
            title=data.title,
            grid=data.grid,
            colorbar=data.bar,
            marks=list(map(list, data.marks)),
        )
        images_grid = data.grid if data.mode != "attention" else {}
        self.images_view.show(
            data.images,
            "jpeg",
            grid=images_grid,
            marks=list(map(list, data.marks)) if data.mode != "attention" else [],
        )
        self.patches_view.layout.display = "" if data.png else "none"
        self.images_view.layout.display = "" if data.images else "none"
