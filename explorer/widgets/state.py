"""What the panel shows, as traitlets: one object a notebook, a test or the controls can set.

The state holds no widgets and runs nothing; :class:`~explorer.widgets.app.Explorer` observes it and redraws.
Validation sits on the traits, so a bad value is refused before anything runs.

Example::

    >>> state = ExplorerState(model="resnet18", out_indices=[1, 2])
    >>> state.norm = "stage"
    >>> state.page_size
    64
"""

from __future__ import annotations

from traitlets import Bool, Enum, Float, HasTraits, Int, List, TraitError, Unicode, validate

from ..render import NORMS
from ..stats import STAT_NAMES

__all__ = ["ExplorerState", "NORMS", "PRECISIONS", "DEVICES", "PAGE_SIZES", "COMPARE_MODES"]

PRECISIONS = ("float32", "float16", "bfloat16")
DEVICES = ("auto", "cpu", "cuda", "mps")
PAGE_SIZES = (16, 32, 64, 128, 256)
COMPARE_MODES = ("off", "images", "checkpoints")


class ExplorerState(HasTraits):
    """Everything the panel shows; setting a trait is what a control does."""

    model = Unicode(
        "default", help="Checkpoint spec: 'default', a timm name, 'hf-hub:...', 'hf:...' or a path."
    )
    pretrained = Bool(True, help="Real weights (True) or random initialisation (False).")
    device = Enum(
        DEVICES, default_value="auto", help="Where the model runs; 'auto' is cuda, then mps, then cpu."
    )
    precision = Enum(PRECISIONS, default_value="float32", help="float16 and bfloat16 need a GPU.")
    out_indices = List(Int(), default_value=[0], help="Selected stages, transformers' out_indices rules.")
    layers = List(Unicode(), help="Any extra module names to capture (see explorer.list_layers).")
    image_index = Int(0, help="Which image of the gallery is shown.")
    stage = Unicode("", help="Which captured map is shown: a stage name or a layer name.")
    channel_mode = Enum(("page", "top"), default_value="page", help="Browse channels by page, or the top K.")
    page = Int(0, help="Channel page, from 0.")
    page_size = Int(64, help="Channels per page.")
    top_by = Enum(STAT_NAMES, default_value="mean", help="Statistic that ranks channels in 'top' mode.")
    norm = Enum(
        NORMS, default_value="channel", help="Colour scale: per channel, per stage, global, symmetric."
    )
    cmap = Unicode("viridis", help="Any matplotlib colour map name.")
    clip = Float(99.5, allow_none=True, help="Percentile clipping of the colour scale; None for min-max.")
    channel = Int(0, help="The channel shown zoomed, as a heatmap and an overlay.")
    alpha = Float(0.5, help="Overlay opacity.")
    compare = Enum(COMPARE_MODES, default_value="off", help="Compare two images, or two checkpoints.")
    compare_image_index = Int(1, help="The second image in 'images' mode.")
    compare_model = Unicode("", help="Second checkpoint spec in 'checkpoints' mode; '' means the same spec.")
    compare_pretrained = Bool(False, help="Weights of the second checkpoint.")

    @validate("page", "channel", "image_index", "compare_image_index")
    def _non_negative(self, proposal):
        if proposal["value"] < 0:
            raise TraitError(f"{proposal['trait'].name} must be 0 or more, got {proposal['value']}")
        return proposal["value"]

    @validate("page_size")
    def _page_size(self, proposal):
        if proposal["value"] not in PAGE_SIZES:
            raise TraitError(f"page_size must be one of {PAGE_SIZES}, got {proposal['value']}")
        return proposal["value"]

    @validate("cmap")
    def _cmap(self, proposal):
        import difflib

        import matplotlib

        name = proposal["value"]
        if name not in matplotlib.colormaps:
            close = difflib.get_close_matches(name, list(matplotlib.colormaps), n=4)
            hint = f" Closest: {', '.join(close)}." if close else ""
            raise TraitError(f'No colour map named "{name}".{hint} Any matplotlib colour map name works.')
        return name

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
