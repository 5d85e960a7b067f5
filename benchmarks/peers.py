"""The peers: how people take feature maps out of a backbone, and draw them, without this project.

Each capture peer is built once for a model and returns a callable ``x -> list of tensors`` (the maps it took,
as that tool gives them: no layout conversion is added). A peer that cannot run a case raises
:class:`Unavailable` with the reason, which the report prints.

Example::

    >>> run = plain_hooks(model, ["layer1", "layer2"])
    >>> [tuple(t.shape) for t in run(torch.randn(1, 3, 224, 224))]
    [(1, 256, 56, 56), (1, 512, 28, 28)]
"""

from __future__ import annotations

import copy
import io
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

__all__ = [
    "Capture",
    "TorchLensPeer",
    "Unavailable",
    "bare_forward",
    "error_reason",
    "matplotlib_grid",
    "numpy_grid",
    "plain_hooks",
    "timm_features_only",
    "torchvision_fx",
    "transformers_resnet50",
]

Capture = Callable[[torch.Tensor], list[torch.Tensor]]
"""A built peer: pixel values in, the captured maps out."""


class Unavailable(RuntimeError):
    """This peer cannot run this case; the message says why (the first line of the tool's own error)."""


def error_reason(err: BaseException) -> str:
    """The first line of an error, with its type, for the report."""
    first = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first[:200]}"


def _forward_features(model: nn.Module) -> Callable[[torch.Tensor], object]:
    forward = getattr(model, "forward_features", None)
    return forward if callable(forward) else model


# ----------------------------------------------------------------------------------------------- capture


def bare_forward(model: nn.Module) -> Capture:
    """The reference: the model's own ``forward_features`` (timm), no capture at all."""
    forward = _forward_features(model)

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        with torch.inference_mode():
            return [forward(x)]

    return run


def plain_hooks(model: nn.Module, modules: Sequence[str]) -> Capture:
    """The hand-written way: a forward hook per module that stores its output, removed after the pass.

    The whole ``forward_features`` runs (no early stop), as a minimal hook loop does.
    """
    by_name = dict(model.named_modules())
    targets = [(name, by_name[name]) for name in modules]
    forward = _forward_features(model)

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        outputs: dict[str, torch.Tensor] = {}
        handles = [
            module.register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, out))
            for name, module in targets
        ]
        try:
            with torch.inference_mode():
                forward(x)
        finally:
            for handle in handles:
                handle.remove()
        return [outputs[name] for name in modules]

    return run


def torchvision_fx(model: nn.Module, modules: Sequence[str]) -> Capture:
    """torchvision's ``create_feature_extractor`` (symbolic tracing) returning the modules' outputs.

    Raises:
        Unavailable: the model cannot be traced symbolically (data-dependent control flow, for example).
    """
    from torchvision.models.feature_extraction import create_feature_extractor

    try:
        with warnings.catch_warnings():  # its note on train/eval node sets does not concern an eval-only run
            warnings.filterwarnings("ignore", message="NOTE: The nodes obtained by tracing")
            extractor = create_feature_extractor(model, return_nodes={name: name for name in modules}).eval()
    except Exception as err:  # any tracing failure is the finding, not a crash of the suite
        raise Unavailable(error_reason(err)) from err

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        with torch.inference_mode():
            out = extractor(x)
        return [out[name] for name in modules]

    return run


def timm_features_only(name: str, out_indices: Sequence[int], device: torch.device) -> Capture:
    """timm's own feature wrapper: ``timm.create_model(name, features_only=True, out_indices=...)``.

    A separate model (random init), as a user of timm builds it.
    """
    import timm

    try:
        model = timm.create_model(name, pretrained=False, features_only=True, out_indices=tuple(out_indices))
    except Exception as err:
        raise Unavailable(error_reason(err)) from err
    model = model.eval().to(device)

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        with torch.inference_mode():
            return list(model(x))

    return run


def transformers_resnet50(out_indices: Sequence[int], device: torch.device) -> Capture:
    """transformers' ``ResNetBackbone`` with resnet-50 sizes, random init (an ``AutoBackbone`` of resnet-50)."""
    from transformers import ResNetBackbone, ResNetConfig

    config = ResNetConfig(
        embedding_size=64,
        hidden_sizes=[256, 512, 1024, 2048],
        depths=[3, 4, 6, 3],
        layer_type="bottleneck",
        hidden_act="relu",
        out_indices=list(out_indices),
    )
    model = ResNetBackbone(config).eval().to(device)

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        with torch.inference_mode():
            return list(model(x).feature_maps)

    return run


class TorchLensPeer:
    """TorchLens 2.x on its own copy of the model, saving the given modules' outputs and halting after the last.

    TorchLens wraps torch's functions globally while it works. :meth:`setup` installs the wrappers and
    :meth:`teardown` removes them, both outside the timed region, so no other method runs under them and
    TorchLens is not charged for installing them.

    Args:
        model: the network; it is deep-copied.
        modules: module addresses to save, in network order.
    """

    def __init__(self, model: nn.Module, modules: Sequence[str]) -> None:
        import torchlens as tl

        self._tl = tl
        self.model = copy.deepcopy(model).eval()
        self.modules = list(modules)
        selector = tl.module(self.modules[0])
        for name in self.modules[1:]:
            selector = selector | tl.module(name)
        self._save = selector
        last_exit = f"{self.modules[-1]}:exit:1"
        self._halt = lambda ctx: ctx.label == last_exit

    def setup(self) -> None:
        """Install TorchLens's global torch wrappers (untimed)."""
        from torchlens.backends.torch.wrappers import wrap_torch

        wrap_torch()

    def teardown(self) -> None:
        """Restore torch's own functions (untimed)."""
        from torchlens.backends.torch.wrappers import unwrap_torch

        unwrap_torch()

    def record(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``tl.record``: TorchLens's light recording mode."""
        with torch.inference_mode():
            recording = self._tl.record(self.model, x, save=self._save, halt=self._halt)
        return [record.ram_payload for record in recording.records]

    def trace(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``tl.trace``: the full trace (graph, metadata) with the modules' outputs saved."""
        with torch.inference_mode():
            trace = self._tl.trace(self.model, x, save=self._save, halt=self._halt)
        return [op.out for op in trace.ops if op.has_saved_activation and not (op.is_output or op.is_buffer)]


# ----------------------------------------------------------------------------------------------- rendering


def _grid_shape(count: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(count))
    return math.ceil(count / cols), cols


def matplotlib_grid(fmap: torch.Tensor, cmap: str = "viridis", dpi: int = 100) -> bytes:
    """The common notebook way: a subplot per channel, ``imshow``, axis off, saved as PNG.

    Built on ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot state); each tile is about the map's
    own size in pixels, so the image is about as large as :func:`explorer.render_grid`'s.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = fmap.detach().float().cpu().numpy()
    count, height, width = values.shape
    rows, cols = _grid_shape(count)
    figure = Figure(figsize=(cols * width / dpi, rows * height / dpi), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index < count:
            ax.imshow(values[index], cmap=cmap)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def numpy_grid(fmap: torch.Tensor, cmap: str = "viridis", compress_level: int = 6) -> bytes:
    """Plain NumPy: min-max per channel, a 256-colour table from matplotlib, tiles by reshaping, PIL's PNG.

    ``compress_level`` 6 is PIL's default; 1 matches the level :func:`explorer.to_png` uses for display.
    """
    import matplotlib
    from PIL import Image

    values = fmap.detach().float().cpu().numpy()
    count, height, width = values.shape
    low = values.min(axis=(1, 2), keepdims=True)
    span = values.max(axis=(1, 2), keepdims=True) - low
    index = ((values - low) / np.where(span > 0, span, 1.0) * 255.0).astype(np.uint8)
    table = (matplotlib.colormaps[cmap](np.arange(256))[:, :3] * 255.0).astype(np.uint8)
    rows, cols = _grid_shape(count)
    tiles = np.zeros((rows * cols, height, width, 3), dtype=np.uint8)
    tiles[:count] = table[index]
    grid = tiles.reshape(rows, cols, height, width, 3).transpose(0, 2, 1, 3, 4).reshape(rows * height, -1, 3)
    buffer = io.BytesIO()
    Image.fromarray(grid).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()
