"""Every choice a user makes in the panel, as traitlets: one object a notebook, a test or the controls can set.

The state holds no widgets and runs nothing. Each trait's ``work`` tag says what a change costs: ``"load"`` (a
checkpoint), ``"capture"`` (a forward pass) or ``"draw"`` (a redraw from the cached capture); the
:class:`~explorer.widgets.engine.Controller` reads it. Validation sits on the traits, so a bad value is
refused (a ``TraitError`` naming the fix) before anything runs.

Importing this module loads no torch: the panel must be on the page before torch has finished importing.

Example::

    >>> state = ExplorerState(model="resnet18", out_indices=[1, 2])
    >>> state.norm = "stage"
    >>> ExplorerState.work("norm"), ExplorerState.work("out_indices")
    (1, 2)
    >>> state.snapshot()["out_indices"]
    (1, 2)
"""

from __future__ import annotations

from traitlets import Any, Bool, Enum, Float, HasTraits, Int, List, TraitError, Tuple, Unicode, validate

from ..vocabulary import CONCEPT_METHODS, MAP_CMAP, NORMS, STAT_NAMES, VIS_METHODS

__all__ = [
    "COMPARE_MODES",
    "CONCEPT_METHODS",
    "DATASET_MODES",
    "DEVICES",
    "DRAW",
    "CAPTURE",
    "LOAD",
    "NORMS",
    "PAGE_SIZES",
    "PATCH_MODES",
    "PRECISIONS",
    "SORT_KEYS",
    "STAT_NAMES",
    "VIS_METHODS",
    "ExplorerState",
]

SORT_KEYS = ("channel", *STAT_NAMES)
PRECISIONS = ("float32", "float16", "bfloat16")
DEVICES = ("auto", "cpu", "cuda", "mps")
PAGE_SIZES = (16, 32, 64, 128, 256)
COMPARE_MODES = ("off", "images", "checkpoints")
PATCH_MODES = ("pca", "similarity", "attention")
DATASET_MODES = ("channels", "concepts")

DRAW, CAPTURE, LOAD = 1, 2, 3
_LEVELS = {"draw": DRAW, "capture": CAPTURE, "load": LOAD}


def _load(trait):
    return trait.tag(work="load")


def _capture(trait):
    return trait.tag(work="capture")


def _draw(trait):
    return trait.tag(work="draw")


class ExplorerState(HasTraits):
    """Everything the panel shows; setting a trait is what a control does."""

    model = _load(
        Unicode("default", help="Checkpoint spec: 'default', a timm name, 'hf-hub:...', 'hf:...' or a path.")
    )
    pretrained = _load(Bool(True, help="Real weights (True) or random initialisation (False)."))
    device = _load(
        Enum(DEVICES, default_value="auto", help="Where the model runs; 'auto' is cuda, then mps, then cpu.")
    )
    precision = _load(Enum(PRECISIONS, default_value="float32", help="float16 and bfloat16 need a GPU."))
    out_indices = _capture(
        List(
            Any(),
            default_value=[0],
            help="Selected stages, checked by explorer.stages.select_stages (transformers' rules and messages).",
        )
    )
    layers = _capture(List(Unicode(), help="Any extra module names to capture (see explorer.list_layers)."))
    image_index = _capture(Int(0, help="Which image of the gallery is shown."))
    compare = _capture(
        Enum(COMPARE_MODES, default_value="off", help="Compare two images, or two checkpoints.")
    )
    compare_image_index = _capture(Int(1, help="The second image in 'images' mode."))
    compare_model = _capture(
        Unicode("", help="Second checkpoint spec in 'checkpoints' mode; '' means the same spec.")
    )
    compare_pretrained = _capture(Bool(False, help="Weights of the second checkpoint."))
    tab = _draw(Unicode("Grid", help="The tab on show: Grid, Statistics, Shapes, Compare, ..."))
    stage = _draw(Unicode("", help="Which captured map is shown: a stage name or a layer name."))
    channel_mode = _draw(
        Enum(("page", "top"), default_value="page", help="Browse channels by page, or the top K.")
    )
    page = _draw(Int(0, help="Channel page, from 0."))
    page_size = _draw(Int(64, help="Channels per page."))
    top_by = _draw(
        Enum(STAT_NAMES, default_value="mean", help="Statistic that ranks channels in 'top' mode.")
    )
    norm = _draw(
        Enum(NORMS, default_value="channel", help="Colour scale: per channel, per stage, global, symmetric.")
    )
    cmap = _draw(Unicode(MAP_CMAP, help="Any matplotlib colour map name (grids and overlays alike)."))
    clip = _draw(
        Float(99.5, allow_none=True, help="Percentile clipping of the colour scale; None for min-max.")
    )
    channel = _draw(Int(0, help="The channel shown zoomed, as a heatmap and an overlay."))
    alpha = _draw(Float(0.5, help="Overlay opacity: 0 shows the image only, 1 the map only."))
    sort_by = _draw(
        Enum(SORT_KEYS, default_value="mean", help="Statistics table: the column it is sorted by.")
    )
    descending = _draw(Bool(True, help="Statistics table: largest first."))
    cam_method = _draw(Unicode("gradcam", help="CAM tab: the method, one of explorer.cam_methods()."))
    cam_target = _draw(
        Int(None, allow_none=True, help="CAM tab: the class index explained; None for the top prediction.")
    )
    dataset_source = _draw(
        Unicode(
            "",
            help="Dataset tab: the folder scanned (or a saved scan); 'samples:N' for N sample images; '' for none.",
        )
    )
    dataset_mode = _draw(
        Enum(
            DATASET_MODES,
            default_value="channels",
            help="Dataset tab: exemplars of the channel on show, or of concepts learnt at the stage on show.",
        )
    )
    concepts_n = _draw(
        Int(8, help="Dataset tab, concepts: how many concepts are learnt (explorer.concepts).")
    )
    concepts_method = _draw(
        Enum(
            CONCEPT_METHODS,
            default_value="semi-nmf",
            help="Dataset tab, concepts: the dictionary; 'nmf' needs a stage without negative values.",
        )
    )
    concept = _draw(Int(0, help="Dataset tab, concepts: the concept shown, from 0."))
    patch_mode = _draw(
        Enum(
            PATCH_MODES,
            default_value="pca",
            help="Patches tab: PCA colours, similarity to a query, attention.",
        )
    )
    patch_query = _draw(
        Tuple(
            Int(),
            Int(),
            Int(),
            default_value=None,
            allow_none=True,
            help="Patches tab: the similarity query (image, row, col) on the stage's grid; None for the centre of "
            "image 0.",
        )
    )
    attention_block = _draw(
        Unicode("", help="Patches tab: the attention block read (bb.attention_blocks()); '' for the last.")
    )
    attention_head = _draw(
        Int(
            None, allow_none=True, help="Patches tab: the attention head shown; None for the mean over heads."
        )
    )
    attention_rollout = _draw(Bool(False, help="Patches tab: also show attention rollout up to the block."))
    vis_target = _draw(
        Tuple(
            Unicode(),
            Int(),
            default_value=None,
            allow_none=True,
            help="Grid and Dataset tabs: the (stage, channel) the Visualise button asked an optimised image for "
            "(explorer.visualize); None for none. Showing another channel stops it.",
        )
    )
    vis_method = _draw(
        Enum(VIS_METHODS, default_value="fft", help="Visualise: Lucid's Fourier image, or MaCo's phase only.")
    )
    vis_steps = _draw(Int(128, help="Visualise: optimisation steps (Lucid uses 512)."))
    vis_size = _draw(Int(128, help="Visualise: side of the optimised image, in pixels (Lucid uses 128)."))

    @classmethod
    def work(cls, name: str) -> int:
        """What a change of ``name`` needs: :data:`LOAD`, :data:`CAPTURE` or :data:`DRAW`."""
        return _LEVELS[cls.class_traits()[name].metadata["work"]]

    def snapshot(self) -> dict[str, object]:
        """Every trait's value, lists as tuples: a value that later changes to the state cannot alter."""
        return {
            name: tuple(value) if isinstance(value, list) else value
            for name in self.trait_names(work=lambda tag: tag is not None)
            for value in [getattr(self, name)]
        }

    @validate("model")
    def _model(self, proposal):
        spec = proposal["value"].strip()
        if not spec:
            raise TraitError('The checkpoint is empty: type "default", a timm name, "hf:..." or a path.')
        return spec

    @validate("patch_query")
    def _patch_query(self, proposal):
        value = proposal["value"]
        if value is not None and min(value) < 0:
            raise TraitError(f"patch_query is (image, row, col), each 0 or more; got {value}")
        return value

    @validate("attention_head")
    def _attention_head(self, proposal):
        if proposal["value"] is not None and proposal["value"] < 0:
            raise TraitError(
                f"attention_head must be 0 or more, or None for the mean; got {proposal['value']}"
            )
        return proposal["value"]

    @validate("page", "channel", "image_index", "compare_image_index", "concept")
    def _non_negative(self, proposal):
        if proposal["value"] < 0:
            raise TraitError(f"{proposal['trait'].name} must be 0 or more, got {proposal['value']}")
        return proposal["value"]

    @validate("concepts_n")
    def _concepts_n(self, proposal):
        if proposal["value"] < 1:
            raise TraitError(f"concepts_n must be 1 or more, got {proposal['value']}")
        return proposal["value"]

    @validate("page_size")
    def _page_size(self, proposal):
        if proposal["value"] not in PAGE_SIZES:
            raise TraitError(f"page_size must be one of {PAGE_SIZES}, got {proposal['value']}")
        return proposal["value"]

    @validate("vis_steps")
    def _vis_steps(self, proposal):
        if not 1 <= proposal["value"] <= 4096:
            raise TraitError(f"vis_steps is between 1 and 4096 (Lucid uses 512); got {proposal['value']}")
        return proposal["value"]

    @validate("vis_size")
    def _vis_size(self, proposal):
        if not 16 <= proposal["value"] <= 512:
            raise TraitError(
                f"vis_size is between 16 and 512 pixels (Lucid uses 128); got {proposal['value']}"
            )
        return proposal["value"]

    @validate("cmap")
    def _cmap(self, proposal):
        from ..errors import InvalidArgumentError
        from ..vocabulary import colormap_name

        try:
            return colormap_name(proposal["value"].strip())
        except InvalidArgumentError as error:
            raise TraitError(str(error)) from None

    @validate("alpha")
    def _alpha(self, proposal):
        if not 0.0 <= proposal["value"] <= 1.0:
            raise TraitError(f"alpha must be between 0 and 1, got {proposal['value']}")
        return proposal["value"]

    @validate("clip")
    def _clip(self, proposal):
        value = proposal["value"]
        if value is not None and not 50.0 < value <= 100.0:
            raise TraitError(f"clip is a percentile in (50, 100], or None; got {value}")
        return value
