"""Layouts of layers inside models, found by probing (:func:`explorer.hooks.find_layouts`), against plain hooks.

Each case names a layer and the rule its model's code gives for its output (read from timm's source, not from
explorer): ``"nchw"``, ``"nhwc"`` (a ``permute(0, 2, 3, 1)`` before it), ``"tokens:<prefix>"`` (``(B, N, C)`` after
``<prefix>`` class/register tokens) or ``None`` (no grid of the input: pooled, windows in the batch). The map
``bb.capture`` returns must equal the plain hook's output converted by that rule, exactly, and ``aligned`` must
be true exactly when the rule gives a grid.
"""

from __future__ import annotations

import pytest
import torch

import explorer
from explorer.hooks import layout_from_shapes

CASES = [
    ("resnet18", "layer1.0.conv1", "nchw"),
    ("resnet18", "global_pool", None),  # (B, C) after pooling
    ("resnet18", "fc", None),
    ("convnext_atto", "stages.0.blocks.0.conv_dw", "nchw"),
    ("convnext_tiny", "stages.0.blocks.0.norm", "nhwc"),  # x.permute(0, 2, 3, 1) before the norm
    ("convnext_tiny", "stages.0.blocks.0.mlp.fc1", "nhwc"),
    ("convnext_tiny", "head.global_pool", None),  # (B, C, 1, 1) at every size
    ("vit_tiny_patch16_224", "patch_embed", "tokens:0"),  # flatten(2).transpose(1, 2): no class token yet
    ("vit_tiny_patch16_224", "blocks.0", "tokens:1"),
    ("vit_tiny_patch16_224", "blocks.0.attn", "tokens:1"),
    ("swin_tiny_patch4_window7_224", "layers.0.blocks.0.norm1", "nhwc"),
    ("swin_tiny_patch4_window7_224", "layers.1", "nhwc"),
    ("swin_tiny_patch4_window7_224", "layers.0.blocks.0.attn", None),  # windows folded into the batch
    ("mambaout_femto", "stem.conv1", "nchw"),
    ("mambaout_femto", "stem.norm1", "nhwc"),  # MambaOut's stem permutes to channels-last after conv1
    ("mambaout_femto", "stages.0.blocks.0", "nhwc"),
]


def _by_rule(output: torch.Tensor, rule: str, size: tuple[int, int]) -> torch.Tensor:
    if rule == "nchw":
        return output
    if rule == "nhwc":
        return output.permute(0, 3, 1, 2)
    prefix = int(rule.split(":")[1])
    tokens = output[:, prefix:]
    side = int(round(tokens.shape[1] ** 0.5))
    return tokens.transpose(1, 2).reshape(output.shape[0], -1, side, tokens.shape[1] // side)


@pytest.fixture(scope="module")
def backbones():
    return {}


@pytest.mark.parametrize(("spec", "layer", "rule"), CASES, ids=[f"{s}-{layer}" for s, layer, _ in CASES])
def test_capture_follows_the_models_own_layout(backbones, spec, layer, rule):
    if spec not in backbones:
        torch.manual_seed(0)
        backbones[spec] = explorer.load_backbone(spec, pretrained=False, device="cpu")
    bb = backbones[spec]
    x = torch.randn(1, 3, 224, 224)
    outputs = []
    module = dict(bb.model.named_modules())[layer]
    handle = module.register_forward_hook(lambda _m, _a, out: outputs.append(out.detach().clone()))
    try:
        with torch.inference_mode():
            bb.model(x)
    finally:
        handle.remove()
    maps = bb.capture(x, [layer])
    assert maps.aligned[layer] is (rule is not None), maps.unaligned
    if rule is not None:
        assert torch.equal(maps[layer], _by_rule(outputs[0], rule, (224, 224)))


def test_shapes_alone_tell_the_layout():
    size = (64, 64)
    nhwc = layout_from_shapes((1, 16, 16, 16), (1, 32, 48, 16), size)
    nchw = layout_from_shapes((1, 16, 16, 16), (1, 16, 32, 48), size)
    assert (nhwc.channels_last, nhwc.unaligned, nchw.channels_last, nchw.unaligned) == (
        True,
        None,
        False,
        None,
    )
    tokens = layout_from_shapes((1, 1 + 4 + 16 * 16, 8), (1, 1 + 4 + 32 * 48, 8), size)
    assert (tokens.prefix_tokens, tokens.reduction) == (5, 4)
    assert layout_from_shapes((1, 8, 1, 1), (1, 8, 1, 1), size).unaligned  # pooled at every size
    assert layout_from_shapes((4, 49, 8), (24, 49, 8), size).unaligned  # windows in the batch
    assert "either axes" in layout_from_shapes((1, 16, 16, 16), None, size).unaligned  # one size: ambiguous


def test_cam_leaves_no_hook_when_a_target_is_refused():
    bb = explorer.load_backbone("resnet18", pretrained=False, device="cpu")
    before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in bb.model.modules())
    with pytest.raises(explorer.ExplorerError):
        explorer.cam(bb, torch.randn(1, 3, 32, 32), stage="layer1", target="no such class")
    with pytest.raises(explorer.ExplorerError, match="NaN or infinite"):
        explorer.cam(bb, torch.full((1, 3, 32, 32), float("nan")), stage="layer1")
    after = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in bb.model.modules())
    assert after == before


def test_cam_on_stages_computed_inside_the_forward_is_a_clear_error():
    bb = explorer.load_backbone("twins_svt_small", pretrained=False, device="cpu", img_size=64)
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(explorer.CAMError, match="is the output of a module of its own"):  # the default stage
        explorer.cam(bb, x, method="eigencam")
    with pytest.raises(explorer.CAMError, match='Stage "block.1" is computed inside'):
        explorer.cam(bb, x, stage="block.1", method="eigencam")
    assert explorer.cam(bb, x, stage="blocks.1.0", method="eigencam")[0].map.shape == (64, 64)
