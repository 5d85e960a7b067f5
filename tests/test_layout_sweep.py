"""Every layer of many models: ``bb.capture`` against a plain forward hook, on cases generated, not picked by hand.

Models: every timm family of ``test_oracle_timm.ARCHITECTURES`` (its smallest small variant, random init, made
small as there) and every transformers backbone type of ``test_oracle_hf.TINY`` (tiny configs). Layers: every
module the forward pass runs. For each, the oracle is a plain forward hook on the real model, converted by a rule
that comes from the model's code, never from explorer:

- what PyTorch's modules mean: a ``Conv2d``/``BatchNorm2d``/pooling output is ``(B, C, H, W)``; an ``nn.Linear`` or
  a plain ``nn.LayerNorm`` on a 4-D tensor acts on its last axis, so that output is ``(B, H, W, C)``;
- which axes follow the input: the real model run at two input sizes (the second twice the first), axes that
  grow with it are the grid; the batch axis growing means windows or heads folded into the batch;
- tokens ``(B, N, C)``: ``N`` is ``prefix + h * w`` for the model's own prefix tokens (timm's
  ``num_prefix_tokens``, transformers' class and register tokens) or none (a patch embedding), at both sizes;
- Hiera holds its tokens unrolled between its ``unroll`` and ``reroll`` (timm's ``blocks``): no image grid.

``bb.capture`` must give exactly the hook's output so converted, and ``aligned`` must be true exactly when the
rule finds a grid of the input. The quick test runs a few families; the whole sweep is marked ``slow``.
"""

from __future__ import annotations

import pytest
import torch
from test_oracle_hf import _VIT, TINY
from test_oracle_timm import ARCHITECTURES, SMALL, _input_size
from torch import nn

import explorer

_NCHW_TYPES = (nn.Conv2d, nn.BatchNorm2d, nn.GroupNorm, nn.MaxPool2d, nn.AvgPool2d, nn.InstanceNorm2d)
_NHWC_TYPES = (nn.Linear,)


def _first_tensor(output):
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _hooked_forward(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every module's first tensor output of one real forward pass (first call only), cloned at once."""
    outputs: dict[str, torch.Tensor] = {}
    handles = []

    def make(name):
        def hook(_module, _args, output):
            tensor = _first_tensor(output)
            if tensor is not None and name not in outputs:
                outputs[name] = tensor.detach().clone()

        return hook

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(make(name)))
        with torch.inference_mode():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def _strides(h: int, w: int, size: tuple[int, int]) -> set[int]:
    """The strides at which ``(h, w)`` is the grid of a ``size`` input: ``size / stride`` cells, rounded either
    way, less a border that unpadded convolutions cut, the same number of input pixels (within a stride) on both
    axes and at most a tenth of the input."""
    height, width = size
    found = set()
    for stride in range(1, 65):
        lost_h, lost_w = height - stride * h, width - stride * w
        small = all(
            -stride < lost < stride or 0 < lost <= 0.1 * min(height, width) for lost in (lost_h, lost_w)
        )
        if h * w > 1 and small and abs(lost_h - lost_w) < stride:  # 1x1: pooled, no grid
            found.add(stride)
    return found


def _token_grid(tokens: int, size: tuple[int, int], prefixes: list[int]) -> tuple[int, int, int] | None:
    height, width = size
    for prefix in prefixes:
        for stride in range(1, 65):
            for h, w in ((height // stride, width // stride), (-(-height // stride), -(-width // stride))):
                if h * w > 1 and h * w == tokens - prefix:  # one token: a class token alone, no grid
                    return prefix, h, w
    return None


def rule(
    module: nn.Module,
    first: torch.Tensor,
    second: tuple[int, ...] | None,
    sizes: tuple[tuple[int, int], tuple[int, int]],
    prefixes: list[int],
) -> tuple[str, object] | None:
    """``("nchw"|"nhwc", None)`` or ``("tokens", (prefix, h, w))``; None where the output is no grid of the input."""
    size, larger = sizes
    shape = tuple(first.shape)
    if shape[0] != 1 or second is not None and (len(second) != len(shape) or second[0] != shape[0]):
        return None  # windows or heads folded into the batch (one image goes in)
    if first.ndim == 4:
        if second is not None:
            grown = [axis for axis in (1, 2, 3) if second[axis] != shape[axis]]
            layout = {(2, 3): "nchw", (1, 2): "nhwc"}.get(tuple(grown))
        else:  # one size: the axes that make a grid; the module's type where both would
            nchw, nhwc = bool(_strides(shape[2], shape[3], size)), bool(_strides(shape[1], shape[2], size))
            layout = "nchw" if nchw and not nhwc else "nhwc" if nhwc and not nchw else None
            if nchw and nhwc:
                layout = "nhwc" if isinstance(module, _NHWC_TYPES) else "nchw"
        if (
            isinstance(module, _NCHW_TYPES)
            and layout == "nhwc"
            or isinstance(module, _NHWC_TYPES)
            and layout == "nchw"
        ):
            raise AssertionError(f"the rule contradicts the module's type: {type(module).__name__} {shape}")
        if layout is None:
            return None
        axes = (2, 3) if layout == "nchw" else (1, 2)
        strides = _strides(shape[axes[0]], shape[axes[1]], size)
        if second is not None:
            strides &= _strides(second[axes[0]], second[axes[1]], larger)
        return (layout, None) if strides else None
    if first.ndim == 3:
        if second is not None and (second[2] != shape[2] or second[1] == shape[1]):
            return None  # the token axis must follow the input, the channel axis must not
        found = _token_grid(shape[1], size, prefixes)
        if found is None or (second is not None and _token_grid(second[1], larger, [found[0]]) is None):
            return None
        return "tokens", found
    return None


def convert(output: torch.Tensor, how: tuple[str, object]) -> torch.Tensor:
    layout, grid = how
    if layout == "nchw":
        return output
    if layout == "nhwc":
        return output.permute(0, 3, 1, 2)
    prefix, h, w = grid
    return output[:, prefix:].transpose(1, 2).reshape(output.shape[0], output.shape[2], h, w)


def sweep(
    bb,
    size: tuple[int, int],
    prefixes: list[int],
    unrolled: tuple[str, ...] = (),
    in_order: tuple[str, ...] = (),
) -> tuple[int, list[str]]:
    """(cases, mismatches) for every module ``bb.model`` runs, at a ``size`` input; modules inside ``unrolled``
    hold no grid of the image, except those named in ``in_order``."""
    torch.manual_seed(1)
    x = torch.randn(1, 3, *size)
    larger = (size[0] * 2, size[1] * 2)
    first = _hooked_forward(bb.model, x)
    try:
        second = {
            name: tuple(t.shape) for name, t in _hooked_forward(bb.model, torch.randn(1, 3, *larger)).items()
        }
    except Exception:  # a model built for one input size (its own assert, a position embedding)
        second = None
    if second is not None and all(second.get(name) == tuple(t.shape) for name, t in first.items()):
        second = None  # a model that resizes its input to its own size (CrossViT): one size is all it sees
    modules = dict(bb.model.named_modules())
    # stage names give the source's stage maps (tested against timm and transformers in test_oracle_*)
    names = [name for name in first if name not in bb.stage_names]
    maps = bb.capture(x, names)
    bad = []
    for name in names:
        unroll = name not in in_order and any(name == p or name.startswith(p + ".") for p in unrolled)
        how = (
            None
            if unroll
            else rule(modules[name], first[name], second and second.get(name), (size, larger), prefixes)
        )
        if maps.aligned[name] != (how is not None):
            bad.append(
                f"{name} {tuple(first[name].shape)}: aligned={maps.aligned[name]}, rule {how} "
                f"({maps.unaligned.get(name)})"
            )
        elif how is not None:
            expected = convert(first[name], how)
            if maps[name].shape != expected.shape or not torch.equal(maps[name], expected):
                bad.append(f"{name} {tuple(first[name].shape)}: map {tuple(maps[name].shape)} != rule {how}")
    return len(names), bad


# ------------------------------------------------------------------------------------------------------ timm
def _timm_case(name: str) -> tuple[int, list[str]]:
    torch.manual_seed(0)
    bb = explorer.load_backbone(name, pretrained=False, device="cpu", **SMALL.get(name, {}))
    size = _input_size(name, bb.model)
    count = getattr(bb.model, "num_prefix_tokens", 0) or 0
    # a class token per stage (CoaT, CrossViT): one prefix token where the model says no more
    classes = int(any(name.split(".")[-1].startswith("cls_token") for name, _ in bb.model.named_parameters()))
    unrolled = ("blocks",) if hasattr(bb.model, "reroll") else ()  # Hiera: between its unroll and reroll
    return sweep(bb, size, list(dict.fromkeys([count, classes, 0])), unrolled)


QUICK = [
    "convnext_atto",
    "vit_tiny_patch16_224",
    "swin_tiny_patch4_window7_224",
    "mambaout_femto",
    "resnet18",
]


@pytest.mark.parametrize("name", QUICK)
def test_every_layer_of_a_few_timm_models(name):
    cases, bad = _timm_case(name)
    assert cases > 20 and not bad, "\n".join(bad)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in ARCHITECTURES if n not in QUICK])
def test_every_layer_of_every_timm_family(name):
    cases, bad = _timm_case(name)
    assert cases > 5 and not bad, "\n".join(bad)


# ---------------------------------------------------------------------------------------------- transformers
# the backbone types of test_oracle_hf, and a windowed ViT (LW-DETR's: two of its four windows per side)
TYPES = {**TINY, "lw_detr_vit": dict(_VIT, patch_size=8, num_windows=4, window_block_indices=[0, 2])}


def _hf_case(model_type: str, folder) -> tuple[int, list[str]]:
    transformers = pytest.importorskip("transformers")
    config = transformers.AutoConfig.for_model(model_type, **TYPES[model_type])
    torch.manual_seed(0)
    cls = transformers.AutoBackbone._model_mapping[type(config)]
    cls(config).eval().save_pretrained(folder)
    bb = explorer.load_backbone(f"hf:{folder}", pretrained=True, device="cpu")
    # the class token, then the register tokens (DINOv2 with registers, DINOv3), as the embeddings concatenate them
    registers = int(getattr(config, "num_register_tokens", 0) or 0)
    prefixes = list(dict.fromkeys([1 + registers, 1, 0]))
    size = (
        (64, 48)
        if model_type == "vitpose_backbone"
        else (64, 64)
        if "image_size" in TYPES[model_type]
        else (96, 64)
    )
    # Hiera's encoder runs on unrolled tokens; LW-DETR's on tokens window by window (its forward partitions them)
    unrolled = ("encoder",) if model_type in ("hiera", "lw_detr_vit") else ()
    # Hiera's last stage has pooled every mask unit away: its output is in image order (the stage map, its norm aside)
    in_order = (bb.all_stages[-1].module,) if model_type == "hiera" else ()
    return sweep(bb, size, prefixes, unrolled, in_order)


@pytest.mark.parametrize("model_type", ["convnext", "dinov2_with_registers"])
def test_every_layer_of_a_few_transformers_backbones(model_type, tmp_path):
    cases, bad = _hf_case(model_type, tmp_path)
    assert cases > 10 and not bad, "\n".join(bad)


@pytest.mark.slow
@pytest.mark.parametrize("model_type", sorted(set(TYPES) - {"convnext", "dinov2_with_registers"}))
def test_every_layer_of_every_transformers_backbone(model_type, tmp_path):
    cases, bad = _hf_case(model_type, tmp_path)
    assert cases > 5 and not bad, "\n".join(bad)


def test_a_stage_with_a_container_forward_intermediates_walks_through():
    """``stages`` is called by forward() only: asked with a stage (read from forward_intermediates) it is still
    captured, with forward()'s own output."""
    torch.manual_seed(0)
    # conv_mlp=False: the block permutes to channels-last before its norm (timm's convnext.py)
    bb = explorer.load_backbone("convnext_atto", pretrained=False, device="cpu", conv_mlp=False)
    x = torch.randn(1, 3, 64, 96)
    expected = _hooked_forward(bb.model, x)
    maps = bb.capture(x, ["stages.1", "stages", "stages.0.blocks.0.norm"])
    assert torch.equal(maps["stages"], expected["stages"])
    assert torch.equal(maps["stages.0.blocks.0.norm"], expected["stages.0.blocks.0.norm"].permute(0, 3, 1, 2))
    assert maps["stages.1"].shape == (1, 80, 8, 12)  # convnext_atto: 80 channels at stride 8
    assert all(maps.aligned.values())


def test_outputs_of_more_than_four_axes_are_flagged_not_refused():
    """SKNet's split attention is (B, 2, C, 1, 1); Twins' local windows (B, h, w, wh, ww, C)."""
    torch.manual_seed(0)
    bb = explorer.load_backbone("skresnet18", pretrained=False, device="cpu")
    x = torch.randn(1, 3, 64, 64)
    layer = "layer1.0.conv1.attn"
    raw = _hooked_forward(bb.model, x)[layer]
    maps = bb.capture(x, [layer])
    assert raw.ndim == 5 and not maps.aligned[layer] and "5-D" in maps.unaligned[layer]
    assert torch.equal(maps[layer], raw.reshape(1, -1, *raw.shape[-2:]))


def test_reductions_come_from_the_maps_a_windowed_vit_outputs(tmp_path):
    """LW-DETR's ViT holds its hidden states window by window: read as one grid they give twice the true stride;
    the feature maps the model outputs give the stride itself."""
    transformers = pytest.importorskip("transformers")
    config = transformers.AutoConfig.for_model("lw_detr_vit", **TYPES["lw_detr_vit"])
    model = transformers.AutoBackbone._model_mapping[type(config)](config).eval()
    model.save_pretrained(tmp_path)
    bb = explorer.load_backbone(f"hf:{tmp_path}", pretrained=True, device="cpu")
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        (last,) = model(x).feature_maps
    assert (
        [stage.reduction for stage in bb.all_stages] == [64 // last.shape[-2]] * len(bb.all_stages) == [8] * 4
    )
    assert torch.equal(bb(x)[bb.out_features[-1]], last)
