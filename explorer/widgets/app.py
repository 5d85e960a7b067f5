"""``Explorer``: the panel. Controls set an :class:`ExplorerState`; the panel observes it and redraws.

Work is split in three levels, each done only when needed: loading a checkpoint, capturing feature maps (one
forward pass, cached by :class:`Session`), and drawing (grids, statistics, figures) from the cached capture.
Events from the front end are coalesced, so dragging a slider ends on the latest value without a queue of stale
renders. Every error lands in the status line; what is already shown stays.

Example::

    >>> app = explorer.Explorer()                    # the built-in default on the sample images; shows itself
    >>> app.model = "resnet18"; app.pretrained = False
    >>> app.out_indices = [1, 2]
    >>> app.feature_maps.shapes
    {'layer1': (1, 64, 56, 56), 'layer2': (1, 128, 28, 28)}
"""

from __future__ import annotations

import asyncio
import html
import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import ipywidgets as widgets
import numpy as np
import torch
from PIL import Image
from traitlets import TraitError

from .. import figures
from ..backbones import SUGGESTED, Backbone
from ..errors import ImageError
from ..hooks import FeatureMaps, list_layers
from ..images import ImageInput, load_image, model_view, sample_images
from ..render import overlay, render_grid, to_png, value_range
from ..stages import select_stages
from ..stats import STAT_NAMES, channel_difference, channel_stats, histogram, stage_similarity
from .session import Session
from .state import COMPARE_MODES, NORMS, PAGE_SIZES, PRECISIONS, ExplorerState
from .views import STYLE, format_bytes, html_table, status_html

__all__ = ["Explorer"]

_log = logging.getLogger(__name__)

LOAD, CAPTURE, DRAW = 3, 2, 1
_LEVELS = {
    "model": LOAD,
    "pretrained": LOAD,
    "device": LOAD,
    "precision": LOAD,
    "out_indices": CAPTURE,
    "layers": CAPTURE,
    "image_index": CAPTURE,
    "compare": CAPTURE,
    "compare_image_index": CAPTURE,
    "compare_model": CAPTURE,
    "compare_pretrained": CAPTURE,
}
CMAPS = ("viridis", "magma", "inferno", "gray", "RdBu_r", "coolwarm", "jet", "cividis")
TABS = ("Grid", "Statistics", "Shapes", "Compare")
GRID_SIZE = 640
"""Width of the grid on show, in pixels: no grid is drawn larger than the view shows."""


def _in_kernel() -> bool:
    """Whether this runs in a Jupyter kernel (where a front end sends widget events)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _show_in_notebook(widget: widgets.Widget) -> None:
    """Display ``widget`` when running in a Jupyter kernel; do nothing elsewhere (scripts, tests)."""
    if _in_kernel():
        from IPython.display import display

        display(widget)


def _dropdown(description: str, options, value=None, width: str = "170px") -> widgets.Dropdown:
    return widgets.Dropdown(
        options=options, value=value, description=description, layout=widgets.Layout(width=width)
    )


def _png_widget(width: str = "auto") -> widgets.Image:
    return widgets.Image(format="png", layout=widgets.Layout(width=width, object_fit="contain"))


class Explorer(widgets.VBox):
    """The feature-map explorer panel.

    Args:
        model: checkpoint spec (``"default"``, a timm name, ``"hf-hub:..."``, ``"hf:..."``, a path).
        images: images to explore (paths, bytes, PIL images, arrays); the sample images when None.
        out_indices: stages to show (transformers' rules); the first stage when neither this nor
            ``out_features`` is given.
        out_features: stage names, instead of ``out_indices``.
        pretrained: real weights or random initialisation.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        layers: extra module names to capture (see :func:`explorer.list_layers`).
        display: show the panel at once when running in a notebook (so ``app = Explorer()`` is enough).
        state: any other :class:`ExplorerState` trait (``cmap="magma"``, ``norm="stage"``, ...).
    """

    def __init__(
        self,
        model: str = "default",
        images: Sequence[ImageInput] | None = None,
        out_indices: Sequence[int] | None = None,
        out_features: Sequence[str] | None = None,
        *,
        pretrained: bool = True,
        device: str = "auto",
        layers: Sequence[str] = (),
        display: bool = True,
        **state,
    ) -> None:
        super().__init__(layout=widgets.Layout(width="100%"))
        self.session = Session()
        self.state = ExplorerState(
            model=model, pretrained=pretrained, device=device, layers=list(layers), **state
        )
        self.backbone: Backbone | None = None
        self.feature_maps_all: FeatureMaps | None = None
        self.compare_maps: FeatureMaps | None = None
        self.similarity: dict[str, dict[str, float]] = {}  # per stage, on the Compare tab: cosine and cka
        self.last_update_ms = 0.0
        self.draws = 0
        self._drawn: dict[str, tuple] = {}
        self._stats_cache: dict[tuple, object] = {}
        self._capture_count = 0
        self._view: Image.Image | None = None
        self._pending_out_features = list(out_features) if out_features is not None else None
        if out_indices is not None:
            self.state.out_indices = list(out_indices)
        self._dirty = LOAD
        self._scheduled = None
        self._good = {}
        self._images: list[Image.Image] = []
        self._image_names: list[str] = []
        self._images_version = 0
        self._build_controls()
        self._set_images(images if images is not None else None)
        self.state.observe(self._on_state)
        self.refresh()
        if display:
            _show_in_notebook(self)

    # -- scripting ---------------------------------------------------------------------------------------
    model = property(lambda self: self.state.model, lambda self, v: self._set("model", v))
    pretrained = property(lambda self: self.state.pretrained, lambda self, v: self._set("pretrained", v))
    device = property(lambda self: self.state.device, lambda self, v: self._set("device", v))
    precision = property(lambda self: self.state.precision, lambda self, v: self._set("precision", v))
    out_indices = property(
        lambda self: list(self.state.out_indices), lambda self, v: self._set("out_indices", list(v))
    )
    layers = property(lambda self: list(self.state.layers), lambda self, v: self._set("layers", list(v)))
    stage = property(lambda self: self.state.stage, lambda self, v: self._set("stage", v))
    channel = property(lambda self: self.state.channel, lambda self, v: self._set("channel", v))
    cmap = property(lambda self: self.state.cmap, lambda self, v: self._set("cmap", v))
    norm = property(lambda self: self.state.norm, lambda self, v: self._set("norm", v))
    page = property(lambda self: self.state.page, lambda self, v: self._set("page", v))

    def _set(self, name: str, value) -> None:
        setattr(self.state, name, value)
        self.refresh()

    @property
    def out_features(self) -> list[str]:
        """Names of the selected stages; setting it selects by name."""
        self.refresh()
        return self.backbone.out_features if self.backbone else []

    @out_features.setter
    def out_features(self, names: Sequence[str]) -> None:
        self.refresh()
        if self.backbone is None:
            self._pending_out_features = list(names)
            return
        self._set("out_indices", select_stages(self.backbone.stage_names, out_features=list(names))[1])

    @property
    def images(self) -> list[Image.Image]:
        """The gallery (RGB images); setting it replaces the gallery (paths, bytes, PIL images, arrays)."""
        return list(self._images)

    @images.setter
    def images(self, images: Sequence[ImageInput]) -> None:
        self._set_images(images)
        self._mark(CAPTURE)
        self.refresh()

    @property
    def feature_maps(self) -> FeatureMaps:
        """What the panel shows: the maps of the selected stages and layers for the current image."""
        self.refresh()
        maps = self.feature_maps_all or FeatureMaps()
        return FeatureMaps((name, fmap[:1]) for name, fmap in maps.items())

    @property
    def stats(self):
        """:class:`~explorer.stats.ChannelStats` of the shown stage for the current image."""
        self.refresh()
        return self._stats(self.state.stage)

    @property
    def forward_passes(self) -> int:
        """How many times the model has run for this panel."""
        return self.session.forward_passes

    @property
    def grid_png(self) -> bytes:
        """The PNG bytes of the grid on show."""
        self.refresh()
        return bytes(self.grid_image.value)

    @property
    def status(self) -> str:
        """The status line as plain text."""
        import re

        return html.unescape(re.sub(r"<[^>]+>", "", self.status_line.value)).strip()

    # -- controls ----------------------------------------------------------------------------------------
    def _build_controls(self) -> None:
        s = self.state
        wide = widgets.Layout(width="auto")
        self.load_log = widgets.Output(layout=widgets.Layout(max_height="120px", overflow="auto"))
        self.status_line = widgets.HTML(status_html("busy", "Starting..."))
        self.progress = widgets.IntProgress(
            value=0, max=1, bar_style="info", layout=widgets.Layout(width="120px", visibility="hidden")
        )
        self.model_box = widgets.Combobox(
            value=s.model,
            options=list(SUGGESTED),
            placeholder="default, resnet50, hf:..., hf-hub:..., /path/model.safetensors",
            description="Checkpoint",
            continuous_update=False,
            ensure_option=False,
            layout=widgets.Layout(width="420px"),
        )
        self.pretrained_box = widgets.Checkbox(
            value=s.pretrained, description="pretrained", indent=False, layout=wide
        )
        devices = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        self.device_box = _dropdown("Device", devices, s.device if s.device in devices else "auto", "160px")
        self.precision_box = _dropdown("Precision", PRECISIONS, s.precision, "190px")
        self.stage_select = widgets.SelectMultiple(
            options=[], rows=6, description="Stages", layout=widgets.Layout(width="260px")
        )
        self.layers_box = widgets.TagsInput(
            value=list(s.layers),
            allowed_tags=[],
            allow_duplicates=False,
            placeholder="e.g. blocks.1.0.conv_dw",
            layout=widgets.Layout(width="420px"),
        )
        self.stage_table = widgets.HTML()
        self.image_box = _dropdown("Image", [], None, "260px")
        self.upload = widgets.FileUpload(
            accept="image/*", multiple=True, description="Upload", layout=widgets.Layout(width="120px")
        )
        self.view_image = _png_widget("224px")
        self.shown_stage = _dropdown("Show", [], None, "260px")
        self.mode_box = widgets.ToggleButtons(
            options=[("Page", "page"), ("Top K", "top")], value=s.channel_mode, style={"button_width": "64px"}
        )
        self.page_slider = widgets.IntSlider(
            value=0,
            min=0,
            max=0,
            description="Page",
            continuous_update=True,
            layout=widgets.Layout(width="300px"),
        )
        self.page_size_box = _dropdown("Per page", PAGE_SIZES, s.page_size, "150px")
        self.top_by_box = _dropdown("Top by", STAT_NAMES, s.top_by, "160px")
        self.norm_box = _dropdown("Norm", NORMS, s.norm, "170px")
        self.cmap_box = widgets.Combobox(
            value=s.cmap,
            options=list(CMAPS),
            description="Colours",
            ensure_option=False,
            continuous_update=False,
            layout=widgets.Layout(width="200px"),
        )
        self.channel_box = widgets.BoundedIntText(
            value=s.channel, min=0, max=0, description="Channel", layout=widgets.Layout(width="160px")
        )
        self.grid_image = _png_widget("640px")
        self.grid_image.layout.max_width = "100%"
        self.grid_image.add_class("explorer-pixels")
        self.overlay_image = _png_widget("224px")
        self.heatmap = None  # a plotly FigureWidget, made on first draw
        self.heatmap_box = widgets.Box(layout=widgets.Layout(width="370px"))
        self.sort_box = _dropdown("Sort by", ("channel",) + STAT_NAMES, "mean", "170px")
        self.descending_box = widgets.Checkbox(
            value=True, description="descending", indent=False, layout=wide
        )
        self.stats_table = widgets.HTML()
        self.dead_table = widgets.HTML()
        self.stats_figures = widgets.HBox()
        self.shapes_table = widgets.HTML()
        self.compare_mode_box = widgets.ToggleButtons(
            options=[(m.title(), m) for m in COMPARE_MODES], value=s.compare
        )
        self.compare_image_box = _dropdown("Image B", [], None, "260px")
        self.compare_model_box = widgets.Text(
            value=s.compare_model,
            placeholder="same checkpoint",
            description="Checkpoint B",
            continuous_update=False,
            layout=widgets.Layout(width="360px"),
        )
        self.compare_pretrained_box = widgets.Checkbox(
            value=s.compare_pretrained, description="B pretrained", indent=False, layout=wide
        )
        self.compare_grids = widgets.HBox(
            [
                widgets.VBox([widgets.HTML(), _png_widget("100%")], layout=widgets.Layout(width="33%"))
                for _ in range(3)
            ],
            layout=widgets.Layout(display="none"),
        )
        self.compare_table = widgets.HTML()

        for box, name in (
            (self.model_box, "model"),
            (self.pretrained_box, "pretrained"),
            (self.device_box, "device"),
            (self.precision_box, "precision"),
            (self.mode_box, "channel_mode"),
            (self.page_slider, "page"),
            (self.page_size_box, "page_size"),
            (self.top_by_box, "top_by"),
            (self.norm_box, "norm"),
            (self.cmap_box, "cmap"),
            (self.channel_box, "channel"),
            (self.compare_mode_box, "compare"),
            (self.compare_model_box, "compare_model"),
            (self.compare_pretrained_box, "compare_pretrained"),
        ):
            box.observe(self._control_setter(name), names="value")
        self.stage_select.observe(self._on_stage_select, names="value")
        self.layers_box.observe(self._control_setter("layers", list), names="value")
        self.image_box.observe(self._control_setter("image_index"), names="value")
        self.compare_image_box.observe(self._control_setter("compare_image_index"), names="value")
        self.shown_stage.observe(self._control_setter("stage"), names="value")
        self.upload.observe(self._on_upload, names="value")
        self.sort_box.observe(lambda _: self._mark(DRAW) or self._schedule(), names="value")
        self.descending_box.observe(lambda _: self._mark(DRAW) or self._schedule(), names="value")

        self.tabs = widgets.Tab(
            children=[
                widgets.HBox(
                    [self.grid_image, widgets.VBox([self.heatmap_box, self.overlay_image])],
                    layout=widgets.Layout(align_items="flex-start"),
                ),
                widgets.VBox(
                    [
                        widgets.HBox([self.sort_box, self.descending_box]),
                        self.stats_figures,
                        widgets.HBox([self.stats_table, self.dead_table]),
                    ]
                ),
                self.shapes_table,
                widgets.VBox(
                    [
                        widgets.HBox([self.compare_mode_box, self.compare_image_box]),
                        widgets.HBox([self.compare_model_box, self.compare_pretrained_box]),
                        self.compare_grids,
                        self.compare_table,
                    ]
                ),
            ]
        )
        for index, title in enumerate(TABS):
            self.tabs.set_title(index, title)
        self.tabs.observe(lambda _: self._mark(DRAW) or self._schedule(), names="selected_index")

        checkpoint_row = widgets.HBox(
            [self.model_box, self.pretrained_box, self.device_box, self.precision_box, self.progress]
        )
        stages_box = widgets.VBox(
            [
                widgets.HBox([self.stage_select, self.stage_table]),
                widgets.HTML("<small>Any layer (type a name from explorer.list_layers):</small>"),
                self.layers_box,
            ]
        )
        images_box = widgets.VBox([widgets.HBox([self.image_box, self.upload]), self.view_image])
        rows = widgets.Layout(flex_flow="row wrap", align_items="center")
        display_row = widgets.HBox(
            [self.shown_stage, self.mode_box, self.page_slider, self.page_size_box, self.top_by_box],
            layout=rows,
        )
        display_row2 = widgets.HBox([self.norm_box, self.cmap_box, self.channel_box], layout=rows)
        self.children = [
            widgets.HTML(STYLE),
            self.status_line,
            checkpoint_row,
            self.load_log,
            widgets.HBox([stages_box, images_box], layout=widgets.Layout(flex_flow="row wrap")),
            display_row,
            display_row2,
            self.tabs,
        ]

    def _control_setter(self, name: str, convert=lambda v: v):
        def on_change(change):
            if self._syncing:
                return
            try:
                setattr(self.state, name, convert(change["new"]))
            except TraitError as err:
                self._error(err)

        return on_change

    _syncing = False

    def _on_stage_select(self, change) -> None:
        if self._syncing or self.backbone is None:
            return
        names = self.backbone.stage_names
        indices = sorted(names.index(name) for name in change["new"])
        if indices:
            self.state.out_indices = indices

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        added, failures = [], []
        for item in files:
            name = item.get("name", "upload")
            try:
                added.append((name, load_image(item["content"], name=name)))
            except ImageError as err:
                failures.append(str(err))
        with self._quietly():
            self.upload.value = ()
        if added:
            self._images += [image for _, image in added]
            self._image_names += [name for name, _ in added]
            self._images_version += 1
            self._sync_image_options()
            self.state.image_index = len(self._images) - len(added)
            self._mark(CAPTURE)
            self._schedule()
        if failures:
            self._error(" ".join(failures))

    # -- update cycle ------------------------------------------------------------------------------------
    def _on_state(self, change) -> None:
        if self._syncing:
            return
        self._mark(_LEVELS.get(change["name"], DRAW))
        self._schedule()

    def _mark(self, level: int) -> None:
        self._dirty = max(self._dirty or 0, level)

    coalesce: bool | None = None
    """Coalesce control events into one redraw on the event loop: None does so in a Jupyter kernel (where a
    front end sends them, a slider drag many at a time); elsewhere every change redraws at once."""

    def _schedule(self) -> None:
        """Redraw soon, once: events arriving meanwhile only raise the level of work to do."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or not (_in_kernel() if self.coalesce is None else self.coalesce):
            self.refresh()
            return
        if self._scheduled is None:
            self._scheduled = loop.call_later(0.02, self.refresh)

    def refresh(self) -> None:
        """Do whatever work is pending now: load, capture, draw. Errors go to the status line."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        level, self._dirty = self._dirty, None
        if not level:
            return
        start = time.perf_counter()
        ran_before = self.session.forward_passes
        try:
            if level >= LOAD:
                self._load()
            if level >= CAPTURE:
                self._capture()
            self._draw()
        except torch.cuda.OutOfMemoryError:
            self._error(
                "Out of GPU memory. Switch Device to cpu, use fewer or smaller images, or a smaller checkpoint; "
                "what was shown before is kept."
            )
            torch.cuda.empty_cache()
            return
        except Exception as err:  # noqa: BLE001 - every failure lands in the status line; the panel lives on
            _log.debug("panel update failed", exc_info=True)
            if self.backbone is None or self.feature_maps_all is None:
                self._dirty = LOAD  # nothing shown yet: the next change tries from the start
            self._error(err)
            return
        finally:
            self.progress.layout.visibility = "hidden"
        self.last_update_ms = (time.perf_counter() - start) * 1000
        self._ok(ran=self.session.forward_passes > ran_before)

    def _load(self) -> None:
        s = self.state
        self._busy(
            f"Loading <b>{html.escape(s.model)}</b> ({'pretrained' if s.pretrained else 'random'} weights)..."
        )
        try:
            with self.load_log:  # download and weight-loading progress bars show here while they run
                backbone = self.session.backbone(
                    s.model, pretrained=s.pretrained, device=s.device, precision=s.precision
                )
        except Exception:
            self._revert(("model", "pretrained", "device", "precision"))
            raise
        finally:
            self.load_log.clear_output()
        self._remember(("model", "pretrained", "device", "precision"))
        if backbone is not self.backbone:
            self.backbone = backbone
            if self._pending_out_features is not None:
                names, self._pending_out_features = self._pending_out_features, None
                self._quiet_set("out_indices", select_stages(backbone.stage_names, out_features=names)[1])
            else:
                self._quiet_set(
                    "out_indices",
                    [i for i in s.out_indices if -len(backbone.stage_names) <= i < len(backbone.stage_names)]
                    or [0],
                )
            with self._quietly():
                self.layers_box.allowed_tags = list_layers(backbone)
                self.layers_box.value = [n for n in s.layers if n in self.layers_box.allowed_tags]
            self._quiet_set("layers", list(self.layers_box.value))

    def _capture(self) -> None:
        s = self.state
        backbone = self.backbone
        previous = backbone.out_indices
        images = [self._current_image()]
        if s.compare == "images" and len(self._images) > 1:
            images.append(self._images[self._image_at(s.compare_image_index)])
        try:
            self._busy(f"Running <b>{html.escape(s.model)}</b> on {len(images)} image(s)...")
            maps = self.session.capture(
                backbone,
                images,
                out_indices=s.out_indices,
                layers=s.layers,
                images_key=(self._images_version, tuple(id(i) for i in images)),
            )
        except Exception:
            backbone.out_indices = previous
            self._revert(("out_indices", "layers", "image_index"))
            raise
        self._remember(("out_indices", "layers", "image_index"))
        self.feature_maps_all = maps
        self._capture_count += 1
        names = list(maps)
        if s.stage not in names:
            self._quiet_set("stage", names[0])
        self.compare_maps = None
        if s.compare == "checkpoints":
            other = self.session.backbone(
                s.compare_model or s.model,
                pretrained=s.compare_pretrained,
                device=s.device,
                precision=s.precision,
                slot="compare",
            )
            stage_indices = [
                other.stage_names.index(n) for n in backbone.out_features if n in other.stage_names
            ]
            if len(stage_indices) != len(backbone.out_features):
                raise ValueError(
                    f"Checkpoint B ({other.spec}) has other stages ({other.stage_names}); compare "
                    "checkpoints of the same architecture."
                )
            self.compare_maps = self.session.capture(
                other,
                images[:1],
                out_indices=stage_indices,
                layers=s.layers,
                images_key=(self._images_version, id(images[0])),
            )
        else:
            self.session.release("compare")

    @contextmanager
    def _quietly(self) -> Iterator[None]:
        """Change controls and state without their observers reacting (the panel itself is making the change)."""
        outer, self._syncing = self._syncing, True
        try:
            yield
        finally:
            self._syncing = outer

    def _quiet_set(self, name: str, value) -> None:
        with self._quietly():
            setattr(self.state, name, value)

    def _remember(self, names) -> None:
        for name in names:
            self._good[name] = getattr(self.state, name)

    def _revert(self, names) -> None:
        for name in names:
            if name in self._good and getattr(self.state, name) != self._good[name]:
                self._quiet_set(name, self._good[name])
        self._sync_controls()

    # -- drawing -----------------------------------------------------------------------------------------
    def _image_at(self, index: int) -> int:
        """``index`` clamped to the gallery."""
        return min(index, len(self._images) - 1)

    def _current_image(self) -> Image.Image:
        return self._images[self._image_at(self.state.image_index)]

    def _current_map(self) -> torch.Tensor:
        return self.feature_maps_all[self.state.stage][0].float()

    def _changed(self, view: str, key: tuple) -> bool:
        """Whether ``view`` must be redrawn for ``key``; remembers the key."""
        if self._drawn.get(view) == key:
            return False
        self._drawn[view] = key
        return True

    def _channel_spec(self) -> str:
        s = self.state
        return f"top:{s.page_size}" if s.channel_mode == "top" else f"page:{s.page}/{s.page_size}"

    def _draw(self) -> None:
        s = self.state
        self.draws += 1
        fmap = self._current_map()
        count = fmap.shape[0]
        if s.channel >= count:
            self._quiet_set("channel", count - 1)
        if s.page * s.page_size >= count:
            self._quiet_set("page", 0)
        self._sync_controls()
        image_key = (id(self._current_image()), self.backbone.preprocess)
        if self._changed("view", image_key):
            self._view = model_view(self._current_image(), self.backbone.preprocess)
            self.view_image.value = to_png(np.asarray(self._view))
        tab = TABS[self.tabs.selected_index or 0]
        if tab == "Grid":
            self._draw_grid(fmap, self._view)
        elif tab == "Statistics":
            self._draw_stats(fmap)
        elif tab == "Shapes":
            self._draw_shapes()
        else:
            self._draw_compare(fmap)

    def _grid(self, fmap: torch.Tensor, channels, vrange=None) -> tuple[bytes, list[int]]:
        """PNG bytes of a grid and the channels it shows."""
        s = self.state
        norm = "stage" if s.norm == "global" and vrange is None else s.norm
        grid, layout = render_grid(
            fmap,
            channels=channels,
            norm=norm,
            cmap=s.cmap,
            clip=s.clip,
            vrange=vrange,
            by=s.top_by,
            labels=True,
            max_size=GRID_SIZE,
            return_layout=True,
        )
        return to_png(grid), list(layout.channels)

    def _draw_grid(self, fmap: torch.Tensor, view: Image.Image) -> None:
        s = self.state
        grid_key = (self._capture_count, s.stage, self._channel_spec(), s.norm, s.cmap, s.clip, s.top_by)
        if self._changed("grid", grid_key):
            self.grid_image.value = self._grid(fmap, self._channel_spec())[0]
        channel_map = fmap[s.channel]
        if not self._changed("channel", (self._capture_count, s.stage, s.channel, s.alpha, s.cmap)):
            return  # the zoomed channel is already on show
        self.overlay_image.value = to_png(overlay(view, channel_map, alpha=s.alpha))
        figure = figures.heatmap_figure(channel_map, title=f"{s.stage} · channel {s.channel}", cmap=s.cmap)
        figure.update_layout(width=360, height=330, margin=dict(l=10, r=10, t=30, b=10))
        if self.heatmap is None:
            import plotly.graph_objects as go

            self.heatmap = go.FigureWidget(figure)
            self.heatmap_box.children = [self.heatmap]
            return
        with self.heatmap.batch_update():  # x and y too: the axes change with the stage
            trace = figure.data[0]
            self.heatmap.data[0].update(x=trace.x, y=trace.y, z=trace.z, colorscale=trace.colorscale)
            self.heatmap.layout.title = figure.layout.title

    def _stats(self, name: str):
        """Channel statistics of a captured map for the current image, computed once per capture."""
        key = (self._capture_count, name)
        if key not in self._stats_cache:
            if self._stats_cache and next(iter(self._stats_cache))[0] != self._capture_count:
                self._stats_cache.clear()
            self._stats_cache[key] = channel_stats(self.feature_maps_all[name][0].float())
        return self._stats_cache[key]

    def _draw_stats(self, fmap: torch.Tensor) -> None:
        s = self.state
        stats = self._stats(s.stage)
        key, descending = self.sort_box.value, self.descending_box.value
        if key == "channel":
            order = range(len(stats))[:: -1 if descending else 1]
        else:
            order = (stats.top if descending else stats.bottom)(None, by=key).channels
        rows = stats.rows()
        rows = [rows[int(i)] for i in order]
        self.stats_table.value = f"<b>{html.escape(s.stage)}</b> · {len(rows)} channels" + html_table(
            rows, limit=64
        )
        dead = [
            {k: summary[k] for k in ("channels", "dead", "constant")} | {"stage": name}
            for name in self.feature_maps_all
            for summary in [self._stats(name).summary()]
        ]
        self.dead_table.value = "<b>Dead channels per stage</b>" + html_table(dead)
        bar = figures.stat_bar_figure(stats, by=key if key != "channel" else "mean")
        hist = figures.histogram_figure(histogram(fmap, bins=64))
        for figure in (bar, hist):
            figure.update_layout(width=440, height=280, margin=dict(l=40, r=10, t=30, b=30))
        if not self.stats_figures.children:
            import plotly.graph_objects as go

            self.stats_figures.children = [go.FigureWidget(bar), go.FigureWidget(hist)]
            return
        for widget, figure in zip(self.stats_figures.children, (bar, hist)):
            with widget.batch_update():
                widget.data = []
                widget.add_traces(figure.data)
                widget.layout = figure.layout

    def _draw_shapes(self) -> None:
        by_name = {stage.name: stage for stage in self.backbone.all_stages}
        height, width = self.backbone.preprocess.input_size
        rows = []
        for name, fmap in self.feature_maps_all.items():
            stage = by_name.get(name)
            rows.append(
                {
                    "map": name,
                    "shape": tuple(fmap[:1].shape),
                    "dtype": str(fmap.dtype).replace("torch.", ""),
                    "memory": format_bytes(fmap[:1].numel() * fmap.element_size()),
                    "reduction": stage.reduction if stage else round(height / fmap.shape[-2]),
                    "device": str(fmap.device),
                }
            )
        self.shapes_table.value = f"<b>Input</b> (1, 3, {height}, {width})" + html_table(rows)

    def _draw_compare(self, fmap: torch.Tensor) -> None:
        s = self.state
        if s.compare == "off":
            self.compare_grids.layout.display = "none"
            self.compare_table.value = "<i>Choose Images or Checkpoints to compare.</i>"
            return
        self.compare_grids.layout.display = None
        if s.compare == "images":
            if len(self._images) < 2:
                raise ValueError("Comparing images needs two images in the gallery: upload another one.")
            other = self.feature_maps_all[s.stage][1].float()
            title_a, title_b = (
                self._image_names[self._image_at(s.image_index)],
                self._image_names[self._image_at(s.compare_image_index)],
            )
            similarity = {
                name: stage_similarity(m[:1].float(), m[1:2].float())
                for name, m in self.feature_maps_all.items()
            }
        else:
            other = self.compare_maps[s.stage][0].float()
            title_a = f"{s.model} ({'pretrained' if s.pretrained else 'random'})"
            title_b = f"{s.compare_model or s.model} ({'pretrained' if s.compare_pretrained else 'random'})"
            similarity = {
                name: stage_similarity(self.feature_maps_all[name][:1].float(), m.float())
                for name, m in self.compare_maps.items()
            }
        vrange = value_range([fmap, other], clip=s.clip) if s.norm == "global" else None
        png_a, channels = self._grid(fmap, self._channel_spec(), vrange)
        png_b, _ = self._grid(other, channels, vrange)
        png_diff = to_png(
            render_grid(
                fmap - other,
                channels=channels,
                norm="symmetric",
                cmap="RdBu_r",
                labels=True,
                max_size=GRID_SIZE,
            )
        )
        for pane, (title, png) in zip(
            self.compare_grids.children, ((title_a, png_a), (title_b, png_b), ("A − B", png_diff))
        ):
            pane.children[0].value = f"<b>{html.escape(title)}</b>"
            pane.children[1].value = png
        self.similarity = similarity
        diff = channel_difference(fmap, other)
        rows = [
            {"stage": name, "cosine": round(v["cosine"], 4), "linear CKA": round(v["cka"], 4)}
            for name, v in similarity.items()
        ]
        top = diff.top(8, by="mean_abs")
        changed = [{"channel": int(c), "mean |A−B|": float(v)} for c, v in zip(top.channels, top.values)]
        self.compare_table.value = (
            "<b>Similarity per stage</b>"
            + html_table(rows)
            + f"<b>Channels that differ most at {html.escape(s.stage)}</b>"
            + html_table(changed)
        )

    # -- syncing controls and status -----------------------------------------------------------------------
    def _set_images(self, images: Sequence[ImageInput] | None) -> None:
        if images is None:
            samples = sample_images()
            names, loaded = list(samples), list(samples.values())
        else:
            loaded = [load_image(image) for image in images]
            names = [str(image) if isinstance(image, str) else f"image {i}" for i, image in enumerate(images)]
        if not loaded:
            raise ImageError(
                "The panel needs at least one image; pass images=[...] or leave it out for samples."
            )
        self._images, self._image_names = loaded, names
        self._images_version += 1
        self._quiet_set("image_index", 0)
        self._sync_image_options()

    def _sync_image_options(self) -> None:
        options = [
            (f"{name}{' (GIF: first frame)' if img.info.get('frames', 1) > 1 else ''}", i)
            for i, (name, img) in enumerate(zip(self._image_names, self._images))
        ]
        with self._quietly():
            for box in (self.image_box, self.compare_image_box):
                box.options = options
            self.image_box.value = self._image_at(self.state.image_index)
            self.compare_image_box.value = self._image_at(self.state.compare_image_index)

    def _sync_controls(self) -> None:
        """Make every control show the state (after a revert, a clamp or a scripted change)."""
        s = self.state
        with self._quietly():
            if self.backbone is not None:
                table = self.backbone.stage_table()
                self.stage_select.options = self.backbone.stage_names
                self.stage_select.value = tuple(self.backbone.out_features)
                self.stage_table.value = html_table(
                    [
                        {k: row[k] for k in ("index", "name", "channels", "reduction", "shape")}
                        for row in table
                    ],
                    selected=[row["selected"] for row in table],
                )
            if self.feature_maps_all is not None:
                names = list(self.feature_maps_all)
                self.shown_stage.options = names
                self.shown_stage.value = s.stage if s.stage in names else names[0]
                count = self.feature_maps_all[self.shown_stage.value].shape[1]
                self.page_slider.max = max(0, math.ceil(count / s.page_size) - 1)
                self.channel_box.max = count - 1
            self.page_slider.disabled = s.channel_mode == "top"
            for box, value in (
                (self.model_box, s.model),
                (self.pretrained_box, s.pretrained),
                (self.device_box, s.device if s.device in self.device_box.options else "auto"),
                (self.precision_box, s.precision),
                (self.page_slider, s.page),
                (self.page_size_box, s.page_size),
                (self.mode_box, s.channel_mode),
                (self.top_by_box, s.top_by),
                (self.channel_box, s.channel),
                (self.cmap_box, s.cmap),
                (self.norm_box, s.norm),
                (self.layers_box, list(s.layers)),
                (self.image_box, self._image_at(s.image_index)),
                (self.compare_mode_box, s.compare),
                (self.compare_image_box, self._image_at(s.compare_image_index)),
                (self.compare_model_box, s.compare_model),
                (self.compare_pretrained_box, s.compare_pretrained),
            ):
                box.value = value

    def _busy(self, message: str) -> None:
        self.status_line.value = status_html("busy", message)
        self.progress.layout.visibility = "visible"

    def _ok(self, ran: bool) -> None:
        bb = self.backbone
        weights = {
            "random": '<b class="random">RANDOM WEIGHTS</b> (pretrained=False): the maps show no learned features',
            "package": "ImageNet weights (packaged)",
            "cache": "pretrained weights (local cache)",
            "hub": "pretrained weights (downloaded)",
            "file": "weights from a local file",
        }[bb.weights]
        how = "forward pass" if ran else "from cache"
        frames = self._current_image().info.get("frames", 1)
        note = f" · animated image: first of {frames} frames" if frames > 1 else ""
        kind = "warn" if bb.weights == "random" else "ok"
        self.status_line.value = status_html(
            kind,
            f"<b>{html.escape(bb.spec)}</b> · {weights} · {bb.device.type} · {str(bb.dtype).replace('torch.', '')} · "
            f"updated in {self.last_update_ms:.0f} ms ({how}){note}",
        )

    def _error(self, err: object) -> None:
        message = str(err).strip() or type(err).__name__
        _log.info("panel error: %s", message)
        self.status_line.value = status_html("error", f"<b>Error:</b> {html.escape(message)}")
