"""``Explorer``: the panel. It assembles the state, the engine, the controls and one view per tab, and keeps
the scripting API; the work is the engine's (:class:`~explorer.widgets.engine.Controller`).

In a notebook the panel shows at once (with its progress) and fills in when torch, the checkpoint and the first
capture are ready; meanwhile the kernel stays free, and only the kernel's thread writes widgets. Setting a
property from code (``app.model = ...``) does the work before it returns; reading one (``app.feature_maps``)
waits for the work requested so far and returns what the frame on show holds.

Example::

    >>> app = explorer.Explorer(display=False)       # the built-in default on the sample images (display=True: shown)
    >>> app.out_indices = [1, 2]
    >>> app.feature_maps.shapes
    {'blocks.1': (1, 24, 56, 56), 'blocks.2': (1, 40, 28, 28)}
    >>> exec(app.code()); png == app.png              # the library code for the tab on show
    True
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator, Mapping, Sequence

import ipywidgets as widgets
from traitlets import TraitError

from .controls import Controls
from .engine import Controller, Frame
from .engine.codegen import IMAGE_FOLDER, script
from .engine.gallery import LIVE
from .state import ExplorerState
from .views import VIEWS, View
from .views.html import STYLE

__all__ = ["Explorer"]


def _in_kernel() -> bool:
    """Whether this runs in a Jupyter kernel (where a front end sends widget events)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _choice(name: str, doc: str) -> property:
    def get(self):
        value = self._frame().state.get(name, getattr(self.state, name))
        return list(value) if isinstance(value, tuple) else value

    def set(self, value) -> None:
        self._set(name, list(value) if isinstance(value, (tuple, range)) else value)

    return property(get, set, doc=doc)


class Views(Mapping):
    """The panel's views by title, each built on first use (its tab first shown, or read from code), so that
    the panel shows before the widgets of the tabs not on show exist.

    Example::

        >>> app = explorer.Explorer(display=False)
        >>> "Statistics" in app.views.built                # not shown yet: no widgets
        False
        >>> table = app.views["Statistics"].stats_table   # reading a view builds it (and draws the frame on show)
        >>> "Statistics" in app.views.built
        True
    """

    def __init__(self, controls: Controls, built: Callable[[int, View], None]) -> None:
        self._types = {view.title: view for view in VIEWS}
        self._controls, self._on_built = controls, built
        self.built: dict[str, View] = {}

    def __getitem__(self, title: str) -> View:
        if title not in self.built:
            self.built[title] = view = self._types[title](self._controls)  # KeyError: no such tab
            self._on_built(list(self._types).index(title), view)
        return self.built[title]

    def __iter__(self) -> Iterator[str]:
        return iter(self._types)

    def __len__(self) -> int:
        return len(self._types)

    def type(self, title: str) -> type[View] | None:
        """The view class of the tab ``title`` (its ``code``), without building it."""
        return self._types.get(title)


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
        images: Sequence[object] | None = None,
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
        self.state = ExplorerState(
            model=model, pretrained=pretrained, device=device, layers=list(layers), **state
        )
        if out_indices is not None:
            self.state.out_indices = list(out_indices)
        self.controller = Controller(
            self.state,
            images=images,
            views={view.title: view.compute for view in VIEWS},
            out_features=out_features,
            background=_in_kernel(),
            quick={view.title for view in VIEWS if view.quick},
        )
        self.controls = Controls(self.state, self.controller.report, self.controller.add_upload)
        self.views = Views(self.controls, self._built)
        titles = list(self.views)
        self.tabs = widgets.Tab(children=[widgets.Box() for _ in titles], titles=titles)
        self.tabs.observe(lambda change: self._tab_shown(change["new"]), names="selected_index")
        self._tab_shown(self.tabs.selected_index)
        self.controls.link("tab", self.tabs, lambda i: titles[i or 0], titles.index, trait="selected_index")
        self.code_button = widgets.Button(
            description="Code for this view", icon="code", layout=widgets.Layout(width="auto")
        )
        self.code_view = widgets.HTML()
        self.code_button.on_click(lambda _button: self._show_code(self.controller.frame))
        self.camera_button = widgets.ToggleButton(
            description="Camera",
            icon="camera",
            tooltip="The browser's camera as the image on show (its frames replace each other in the gallery)",
            layout=widgets.Layout(width="auto"),
        )
        self.camera_button.observe(self._toggle_camera, names="value")
        self.camera = None  # the Camera widget, made when first switched on
        self._live_key: int | None = None  # the gallery key of the camera frame drawn last
        self.camera_box = widgets.HBox()
        self.children = [
            widgets.HTML(STYLE),
            self.controls.header,
            self.tabs,
            widgets.HBox([self.code_button, self.camera_button]),
            self.camera_box,
            self.code_view,
        ]
        self.controller.listeners.append(self._show)
        if display and _in_kernel():
            from IPython.display import display as show

            show(self)
        self.controller.start()

    def _toggle_camera(self, change) -> None:
        """The Camera button: its frames go to the engine, which puts each in the gallery as the image on show
        (replacing the previous frame); switched off, the camera stops and the last frame stays."""
        if change["new"]:
            if self.camera is None:
                from .camera import Camera

                self.camera = Camera(
                    on_frame=self._camera_frame, acknowledge="later", decode=False, max_fps=15
                )
                self.camera.observe(self._camera_error, names="error")
            self.camera.active = True
            self.camera_box.children = (self.camera,)
        elif self.camera is not None:
            self.camera.active = False
            self.camera_box.children = ()

    def _camera_frame(self, jpeg: bytes) -> None:
        """A frame (on the kernel's thread): decoded and drawn in the engine's worker; the camera sends the next
        only once this one is drawn (:meth:`_camera_drawn`), so frames are dropped in the browser, not queued."""
        self.controller.add_upload(LIVE, jpeg)

    def _camera_drawn(self, frame: Frame) -> None:
        """Acknowledge the camera's frame once a finished frame shows it (a new live image in the gallery) or
        says why not (a refusal on the status line)."""
        if self.camera is None or frame.status.kind == "busy":
            return
        sources, source = frame.gallery.sources, ("camera", LIVE)
        key = frame.gallery.keys[sources.index(source)] if source in sources else None
        if key != self._live_key or frame.failed or frame.status.error:
            self._live_key = key
            self.camera.acknowledge()

    def _camera_error(self, change) -> None:
        """Where the front end gives no camera (VS Code's webview, a page that is not secure), say why."""
        if change["new"]:
            self.controller.report(f"No camera: {change['new']}")

    def _tab_shown(self, index: int | None) -> None:
        """A tab is shown (on the kernel's thread): its view is built the first time."""
        self.views[list(self.views)[index or 0]]

    def _built(self, index: int, view: View) -> None:
        """A view was just built: it takes its placeholder's place in the tabs and shows the frame on show."""
        children = list(self.tabs.children)
        children[index] = view.widget
        self.tabs.children = children
        view.update(self.controller.frame)

    def _show(self, frame: Frame) -> None:
        for view in list(self.views.built.values()):
            view.update(frame)
        if self.code_view.value and frame.status.kind != "busy":
            self._show_code(frame)  # the code on show follows the view
        self.controls.update(frame)  # the status line last: once it says "updated", everything is
        self._camera_drawn(frame)

    def _show_code(self, frame: Frame) -> None:
        try:
            code = self._code(frame)[0]
        except (ValueError, OSError) as err:
            self.controller.report(err)
            return
        value = f'<pre class="explorer-code">{html.escape(code)}</pre>'
        if self.code_view.value != value:
            self.code_view.value = value

    def _made(self, frame: Frame) -> tuple[list[str], list[int], bytes]:
        """The tab on show's code body, gallery indices and bytes (the Grid's for a tab without code)."""
        from ..errors import InvalidArgumentError

        for title in (frame.state.get("tab", "Grid"), "Grid"):
            view, data = self.views.type(title), frame.views.get(title)
            made = view.code(frame, data) if view is not None and view.code and data is not None else None
            if made is not None:
                return made
        raise InvalidArgumentError("Nothing is drawn yet: there is no code for the view.")

    def _code(self, frame: Frame, folder: str = IMAGE_FOLDER) -> tuple[str, bytes]:
        body, indices, png = self._made(frame)
        return script(frame, body, indices, folder), png

    def __getattr__(self, name: str):
        """The controls and the views' widgets by name (``app.cmap_box``, ``app.stats_table``); views not built
        yet are built in tab order until one has it."""
        controls, views = self.__dict__.get("controls"), self.__dict__.get("views")
        if controls is not None and name in vars(controls):
            return vars(controls)[name]
        if views is not None and not name.startswith("_"):
            for title in [*views.built, *(title for title in views if title not in views.built)]:
                if name in vars(views[title]):
                    return vars(views[title])[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- scripting ---------------------------------------------------------------------------------------
    def _frame(self) -> Frame:
        self.controller.wait()
        return self.controller.frame

    def _set(self, name: str, value) -> None:
        self.controller.wait()  # the frame on show is the one a refusal falls back on
        try:
            setattr(self.state, name, value)
        except TraitError as err:
            self.controller.report(err)  # refused: the status says why and the value in force stays
            return
        self.controller.refresh()

    model = _choice("model", "Checkpoint spec.")
    pretrained = _choice("pretrained", "Real weights or random initialisation.")
    device = _choice("device", "auto, cpu, cuda.")
    precision = _choice("precision", "float32, float16, bfloat16.")
    out_indices = _choice("out_indices", "Indices of the selected stages.")
    layers = _choice("layers", "Extra module names captured.")
    stage = _choice("stage", "The map on show.")
    channel = _choice("channel", "The zoomed channel.")
    cmap = _choice("cmap", "Colour map.")
    norm = _choice("norm", "Colour scale.")
    clip = _choice("clip", "Percentile clipping of the colour scale.")
    page = _choice("page", "Channel page.")
    page_size = _choice("page_size", "Channels per page.")
    channel_mode = _choice("channel_mode", "page or top.")
    top_by = _choice("top_by", "The statistic of the top K.")
    alpha = _choice("alpha", "Overlay opacity.")
    image_index = _choice("image_index", "The image on show.")
    compare = _choice("compare", "off, images, checkpoints.")
    tab = _choice("tab", "The tab on show.")
    compare_image_index = _choice("compare_image_index", "Image B, comparing images.")
    compare_model = _choice("compare_model", "Checkpoint B, comparing checkpoints ('' for the same).")
    compare_pretrained = _choice("compare_pretrained", "Weights of checkpoint B.")
    sort_by = _choice("sort_by", "Statistics: the column sorted by.")
    descending = _choice("descending", "Statistics: largest first.")
    cam_method = _choice("cam_method", "CAM: the method (explorer.cam_methods()).")
    cam_target = _choice("cam_target", "CAM: the class explained; None for the top prediction.")
    dataset_source = _choice("dataset_source", "Dataset: the folder or saved scan scanned; 'samples:N'.")
    dataset_mode = _choice("dataset_mode", "Dataset: channels or concepts.")
    concepts_n = _choice("concepts_n", "Dataset, concepts: how many are learnt.")
    concepts_method = _choice("concepts_method", "Dataset, concepts: nmf, semi-nmf or topk-sae.")
    concept = _choice("concept", "Dataset, concepts: the concept shown.")
    patch_mode = _choice("patch_mode", "Patches: pca, similarity or attention.")
    patch_query = _choice(
        "patch_query", "Patches: the similarity query (image, row, col); None for the centre."
    )
    attention_block = _choice("attention_block", "Patches: the attention block ('' for the last).")
    attention_head = _choice("attention_head", "Patches: the attention head; None for the mean over heads.")
    attention_rollout = _choice("attention_rollout", "Patches: also show attention rollout.")
    vis_target = _choice(
        "vis_target",
        "Grid, Dataset: the (stage, channel) to visualise (the Visualise button); None for none.",
    )
    vis_method = _choice("vis_method", "Visualise: fft (Lucid) or maco.")
    vis_steps = _choice("vis_steps", "Visualise: optimisation steps.")
    vis_size = _choice("vis_size", "Visualise: side of the optimised image, in pixels.")

    def refresh(self) -> None:
        """Do any pending work now (load, capture, draw); errors go to the status line."""
        self.controller.refresh()

    def code(self, folder: str = IMAGE_FOLDER) -> str:
        """Library code for the tab on show (Grid, CAM, Compare, Dataset, Patches; the Grid's for the others): run as
        given in a fresh interpreter, it binds ``png`` to :attr:`png`. Images that exist only in the kernel are
        saved in ``folder`` first, under the names the code states."""
        return self._code(self._frame(), folder)[0]

    @property
    def png(self) -> bytes:
        """The bytes the tab on show draws, which :meth:`code` binds to ``png``."""
        return self._made(self._frame())[2]

    @property
    def out_features(self) -> list[str]:
        """Names of the selected stages; setting it selects by name."""
        backbone = self._frame().backbone
        return backbone.out_features if backbone is not None else []

    @out_features.setter
    def out_features(self, names: Sequence[str]) -> None:
        from ..stages import select_stages

        backbone = self._frame().backbone
        if backbone is None:
            self.controller.report("No checkpoint is loaded yet; set out_features once it has loaded.")
            return
        try:
            indices = select_stages(backbone.stage_names, out_features=list(names))[1]
        except ValueError as err:
            self.controller.report(err)
            return
        self._set("out_indices", indices)

    @property
    def images(self) -> list:
        """The gallery (RGB images); setting it replaces the gallery (paths, bytes, PIL images, arrays)."""
        return list(self._frame().gallery.images)

    @images.setter
    def images(self, images: Sequence[object]) -> None:
        self.controller.set_images(images)
        self.controller.wait()

    @property
    def backbone(self):
        """The checkpoint on show, with the shown stages selected (a copy: the loaded one is shared)."""
        return self._frame().backbone

    @property
    def feature_maps(self):
        """What the panel shows: the maps of the selected stages and layers for the current image."""
        from ..hooks import FeatureMaps

        maps = self._frame().maps or FeatureMaps()
        return FeatureMaps(((name, fmap[:1]) for name, fmap in maps.items()), unaligned=maps.unaligned)

    @property
    def stats(self):
        """:class:`~explorer.stats.ChannelStats` of the shown stage for the current image."""
        frame = self._frame()
        return frame.scene.stats(frame.state["stage"]) if frame.scene is not None else None

    @property
    def grid_png(self) -> bytes:
        """The PNG bytes of the grid on the Grid tab (as last drawn there)."""
        data = self._frame().views.get("Grid")
        return data.grid.png if data is not None else b""

    @property
    def similarity(self) -> dict[str, dict[str, float]]:
        """Per stage, on the Compare tab: cosine and CKA of A and B."""
        data = self._frame().views.get("Compare")
        return data.similarity if data is not None else {}

    @property
    def status(self) -> str:
        """The status line as plain text."""
        return self._frame().status.text

    @property
    def forward_passes(self) -> int:
        """How many times the model has run for this panel."""
        self._frame()
        return self.controller.forward_passes

    @property
    def draws(self) -> int:
        """How many times a view was drawn."""
        self._frame()
        return self.controller.draws

    @property
    def last_update_ms(self) -> float:
        """How long the last update took."""
        return self._frame().update_ms

    @property
    def coalesce(self) -> bool:
        """Work in the background, merging events (True in a kernel); False works every change at once."""
        return self.controller.background

    @coalesce.setter
    def coalesce(self, value: bool | None) -> None:
        self.controller.background = _in_kernel() if value is None else bool(value)
