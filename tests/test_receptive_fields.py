"""Known answers for the scan's receptive fields: hand-built linear convolution stacks whose input-gradient mass
is fixed by their weights (not by the input), so the side holding 90% of it can be computed by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import explorer
from explorer.backbones.timm import TimmPreprocess
from explorer.dataset.fields import cell_box, receptive_fields

SIZE = 32


def _backbone(*layers: nn.Module, reduction: int = 1) -> explorer.Backbone:
    model = nn.Sequential(*layers).eval()
    last = str(len(layers) - 1)
    channels = next(m.out_channels for m in reversed(layers) if isinstance(m, nn.Conv2d))
    stage = explorer.Stage("out", 0, channels, reduction, last)
    preprocess = TimmPreprocess({"input_size": (3, SIZE, SIZE), "crop_pct": 1.0})
    return explorer.Backbone(model, [stage], spec="hand-built", weights="random", preprocess=preprocess)


def _conv(kernel: torch.Tensor, stride: int = 1) -> nn.Conv2d:
    """A 3 -> 1 convolution applying ``kernel`` to every colour channel, padded to keep the grid (stride 1)."""
    size = kernel.shape[-1]
    conv = nn.Conv2d(3, 1, size, stride=stride, padding=size // 2, bias=True)
    with torch.no_grad():
        conv.weight.copy_(kernel.expand(1, 3, size, size))
        conv.bias.fill_(0.3)
    return conv


def _ring_kernel(size: int, inner: int, outer_weight: float) -> torch.Tensor:
    """1 inside the central ``inner`` x ``inner`` square, ``outer_weight`` outside it."""
    kernel = torch.full((size, size), outer_weight)
    start = (size - inner) // 2
    kernel[start : start + inner, start : start + inner] = 1.0
    return kernel


@pytest.mark.parametrize(
    ("kernel", "side"),
    [
        # uniform 7x7: Chebyshev rings hold 1, 9, 25 of 49 pixels up to radius 2 (51%), 49 at radius 3 -> side 7
        (torch.ones(7, 7), 7),
        # uniform 5x5: 9/25 = 36% within radius 1, all within radius 2 -> side 5
        (torch.ones(5, 5), 5),
        # 7x7 with a heavy 3x3 centre: 9 of 9.4 (96%) within radius 1 -> side 3, not the theoretical 7
        (_ring_kernel(7, 3, 0.01), 3),
        # the same kernel with a lighter centre: 9 of 13 (69%) within radius 1, 9 + 0.1 * 16 = 10.6 of 13 (82%)
        # within radius 2, all within radius 3 -> side 7
        (_ring_kernel(7, 3, 0.1), 7),
    ],
)
def test_one_convolution_gives_the_side_computed_by_hand(kernel, side):
    bb = _backbone(_conv(kernel))
    assert receptive_fields(bb, ["out"]) == {"out": side}


def test_stacked_convolutions_add_up_as_their_composed_kernel():
    """Two uniform 3x3 convolutions compose to a 5x5 pyramid (1 2 3 2 1 per axis, 81 in all): 49 within radius
    1 (60%), all 81 within radius 2 -> side 5; a ReLU-free stack keeps the gradient independent of the input."""
    first = nn.Conv2d(3, 2, 3, padding=1, bias=False)
    second = nn.Conv2d(2, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        first.weight.fill_(1.0)
        second.weight.fill_(1.0)
    assert receptive_fields(_backbone(first, second), ["out"]) == {"out": 5}


def test_a_field_is_never_smaller_than_the_stride():
    """A stride-4 4x4 convolution whose weight sits on its central 2x2: 99% of the mass lies within radius 0.5
    of the cell's centre (side 2), but a box narrower than its cell would leave pixels of the cell unexplained,
    so the side is the stride, 4."""
    conv = nn.Conv2d(3, 1, 4, stride=4, bias=False)
    with torch.no_grad():
        conv.weight.copy_(_ring_kernel(4, 2, 0.001).expand(1, 3, 4, 4))
    assert receptive_fields(_backbone(conv, reduction=4), ["out"]) == {"out": 4}


@pytest.mark.parametrize(
    ("cell", "map_size", "input_size", "side", "box"),
    [
        ((3, 5), (28, 28), (224, 224), 40, (24, 8, 64, 48)),  # centre (44, 28), 20 px either side
        ((0, 0), (7, 7), (224, 224), 100, (0, 0, 66, 66)),  # centre (16, 16): clipped at the top-left
        (
            (6, 6),
            (7, 7),
            (224, 224),
            100,
            (158, 158, 224, 224),
        ),  # centre (208, 208): clipped at the bottom-right
        ((1, 2), (4, 8), (64, 128), 6, (37, 21, 43, 27)),  # centre x = 2.5 * 16 = 40, y = 1.5 * 16 = 24
        ((0, 0), (1, 1), (50, 70), 7, (31, 21, 39, 29)),  # centre (35, 25), half 3.5: floor and ceil outward
    ],
)
def test_cell_box_is_the_square_around_the_cell_centre_clipped_to_the_input(
    cell, map_size, input_size, side, box
):
    assert cell_box(cell, map_size, input_size, side) == box
