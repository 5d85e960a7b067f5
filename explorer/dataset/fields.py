"""Receptive fields: which input pixels a map cell sees, measured from the model's own gradients.

A stage's theoretical receptive field grows with depth until it covers the whole input (a ViT's covers it from
the first block), so it would make every exemplar crop the whole image. What a cell mostly responds to is its
*effective* receptive field (Luo et al., 2016, "Understanding the Effective Receptive Field in Deep CNNs"): the
input-gradient mass of the cell, concentrated around the cell's centre.

The rule, per stage or layer, measured once per scan with the scan's own weights:

1. run the model on :data:`PROBES` inputs of standard normal noise (seeded, so every run measures the same);
2. take the gradient of the sum over channels of the map's centre cell ``(h // 2, w // 2)`` with respect to the
   input, and its absolute value summed over probes and colour channels: an ``(H, W)`` mass;
3. the field's side is twice the smallest Chebyshev radius around the cell's centre (in input pixels) holding
   :data:`MASS` of that mass, at least the stage's stride.

The box of a cell ``(row, col)`` is that square centred on the cell's centre, ``((col + 0.5) * W / w, (row + 0.5)
* H / h)``, clipped to the input: it is given in pixels of the image as the model saw it
(:func:`explorer.model_view`).

Example::

    >>> sides = receptive_fields(bb, ["blocks.1", "blocks.2"])
    >>> sides                                   # the pretrained default
    {'blocks.1': 14, 'blocks.2': 40}
    >>> cell_box((3, 5), (28, 28), (224, 224), sides["blocks.2"])
    (24, 8, 64, 48)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..backbones import Backbone
from ..hooks import tap, to_nchw

__all__ = ["MASS", "PROBES", "cell_box", "receptive_fields"]

MASS = 0.9
"""The share of the centre cell's input-gradient mass that its box holds."""

PROBES = 2
"""Noise inputs the gradient is averaged over."""


def _mass_radius(mass: torch.Tensor, center: tuple[float, float]) -> float:
    height, width = mass.shape
    rows = torch.arange(height, dtype=torch.float64) + 0.5 - center[0]
    cols = torch.arange(width, dtype=torch.float64) + 0.5 - center[1]
    distance = torch.maximum(rows.abs()[:, None], cols.abs()[None, :]).reshape(-1)
    weights = mass.double().reshape(-1)
    order = torch.argsort(distance)
    cumulative = torch.cumsum(weights[order], 0)
    total = float(cumulative[-1])
    if total <= 0:  # no gradient reaches the input (a constant map): the whole input
        return float(max(height, width))
    reached = int(torch.searchsorted(cumulative, torch.tensor(MASS * total, dtype=torch.float64)))
    return float(distance[order][min(reached, distance.numel() - 1)]) + 0.5


def receptive_fields(bb: Backbone, names: Sequence[str]) -> dict[str, int]:
    """The side, in input pixels, of each stage's or layer's effective receptive field (module docs).

    Args:
        bb: the backbone; its weights are used as they are (nothing is changed).
        names: stage names and layer names, as :meth:`explorer.Backbone.capture` takes them.
    """
    modules = {name: bb.module_name(name) for name in names}
    height, width = bb.preprocess.input_size
    layouts = {modules[name]: bb.layout(name, (height, width)) for name in names}
    generator = torch.Generator().manual_seed(0)
    probes = torch.randn(PROBES, 3, height, width, generator=generator)
    probes = probes.to(bb.device, bb.dtype).requires_grad_(True)

    def keep(module: str, out: object) -> torch.Tensor:
        return to_nchw(out, (height, width), layouts[module])

    with torch.enable_grad():
        with tap(bb.model, list(modules.values()), stop_early=True, keep=keep) as outputs:
            bb.model(probes)  # the layers after the last one asked for never run
        sides = {}
        for name in names:
            fmap = outputs[modules[name]]
            rows, cols = fmap.shape[-2:]
            row, col = rows // 2, cols // 2
            (grad,) = torch.autograd.grad(fmap[:, :, row, col].sum(), probes, retain_graph=True)
            center = ((row + 0.5) * height / rows, (col + 0.5) * width / cols)
            radius = _mass_radius(grad.abs().sum((0, 1)).float().cpu(), center)
            stride = max(height / rows, width / cols)
            sides[name] = int(max(math.ceil(2 * radius), math.ceil(stride)))
    return sides


def cell_box(
    cell: tuple[int, int], map_size: tuple[int, int], input_size: tuple[int, int], side: int
) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` in input pixels of the receptive-field square of a map cell."""
    (row, col), (rows, cols), (height, width) = cell, map_size, input_size
    center_y, center_x = (row + 0.5) * height / rows, (col + 0.5) * width / cols
    half = side / 2
    left, top = max(0, math.floor(center_x - half)), max(0, math.floor(center_y - half))
    right, bottom = min(width, math.ceil(center_x + half)), min(height, math.ceil(center_y + half))
    return (int(left), int(top), int(right), int(bottom))
