"""explorer.attention against the softmax read by hand: a hook on timm's ``attn_drop`` with fused attention
switched off by the test itself, and transformers' eager ``output_attentions``; rollout against its definition."""

from __future__ import annotations

from functools import reduce

import numpy as np
import pytest
import torch

import explorer
from explorer.attention_maps import attention_rollout
from explorer.errors import AttentionError, InvalidArgumentError

TIMM_VITS = {  # name: (options, prefix tokens)
    "vit_tiny_patch16_224": ({"img_size": 64}, ("class",)),
    "deit_tiny_distilled_patch16_224": ({"img_size": 64}, ("class", "distillation")),
    "eva02_tiny_patch14_224": ({"img_size": 56}, ("class",)),
    "vit_small_patch14_reg4_dinov2": (
        {"img_size": 56, "depth": 4},
        ("class", "register 0", "register 1", "register 2", "register 3"),
    ),
}


def _timm(name: str):
    options, _ = TIMM_VITS[name]
    return explorer.load_backbone(name, pretrained=False, device="cpu", **options)


def _by_hand(model: torch.nn.Module, pixels: torch.Tensor, count: int) -> list[torch.Tensor]:
    """The softmax of the first ``count`` blocks, read with the test's own hooks and fused attention off."""
    found = []
    attention = [block.attn for block in model.blocks[:count]]
    for module in attention:
        module.fused_attn = False
    handles = [m.attn_drop.register_forward_hook(lambda _m, _a, out: found.append(out[0])) for m in attention]
    try:
        with torch.no_grad():
            model(pixels)
    finally:
        for handle in handles:
            handle.remove()
        for module in attention:
            module.fused_attn = True
    return found


@pytest.mark.parametrize("name", list(TIMM_VITS))
def test_timm_attention_is_the_models_softmax(name):
    bb = _timm(name)
    prefix = TIMM_VITS[name][1]
    pixels = torch.randn(1, 3, *bb.preprocess.input_size)
    expected = _by_hand(bb.model, pixels, 3)
    assert all(m.fused_attn for m in bb.model.modules() if hasattr(m, "fused_attn"))
    att = explorer.attention(bb, pixels, block="blocks.2", rollout=True)
    heads, tokens, _ = expected[2].shape
    grid = int(round((tokens - len(prefix)) ** 0.5))
    assert att.prefix_tokens == prefix and att.block == "blocks.2"
    torch.testing.assert_close(att.maps, expected[2][:, 0, len(prefix) :].reshape(heads, grid, grid))
    torch.testing.assert_close(att.prefix_attention, expected[2][:, 0, : len(prefix)])
    torch.testing.assert_close(att.prefix_share + att.maps.sum((1, 2)), torch.ones(heads))
    rolled = attention_rollout(expected)[0, len(prefix) :].reshape(grid, grid)
    torch.testing.assert_close(att.rollout, rolled)
    # the model is left as it was found: fused attention back on every block
    assert all(m.fused_attn for m in bb.model.modules() if hasattr(m, "fused_attn"))


def test_fused_attention_is_restored_when_the_pass_fails():
    bb = _timm("vit_tiny_patch16_224")

    def fail(*_):
        raise RuntimeError("boom")

    handle = bb.model.blocks[1].register_forward_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            explorer.attention(bb, torch.randn(1, 3, 64, 64), block=3)
    finally:
        handle.remove()
    assert all(m.fused_attn for m in bb.model.modules() if hasattr(m, "fused_attn"))


def test_block_by_index_and_default():
    bb = _timm("vit_tiny_patch16_224")
    pixels = torch.randn(1, 3, 64, 64)
    last = explorer.attention(bb, pixels)
    assert last.block == bb.attention_blocks()[-1] == "blocks.11" and last.rollout is None
    torch.testing.assert_close(explorer.attention(bb, pixels, block=-1).maps, last.maps)
    assert explorer.attention(bb, pixels, block=0).block == "blocks.0"


def _hf_folder(transformers, tmp_path, registers: int):
    common = dict(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=56,
        patch_size=14,
    )
    if registers:
        config = transformers.Dinov2WithRegistersConfig(num_register_tokens=registers, **common)
        transformers.Dinov2WithRegistersBackbone(config).save_pretrained(tmp_path)
    else:
        transformers.Dinov2Backbone(transformers.Dinov2Config(**common)).save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.parametrize("registers", [0, 4])
def test_transformers_attention_is_eager_output_attentions(transformers, tmp_path, registers):
    folder = _hf_folder(transformers, tmp_path, registers)
    bb = explorer.load_backbone(f"hf:{folder}", pretrained=True, device="cpu")
    assert bb.attention_blocks() == ["stage1", "stage2", "stage3"]
    pixels = torch.randn(1, 3, 56, 70)  # not square: a 4x5 grid
    cls = transformers.Dinov2WithRegistersBackbone if registers else transformers.Dinov2Backbone
    oracle = cls.from_pretrained(str(folder), attn_implementation="eager").eval()
    with torch.no_grad():
        expected = oracle(pixels, output_attentions=True).attentions
    before = bb.model.config._attn_implementation
    att = explorer.attention(bb, pixels, block="stage2", rollout=True)
    assert bb.model.config._attn_implementation == before == "sdpa"
    prefix = 1 + registers
    assert att.prefix_tokens == ("class",) + tuple(f"register {i}" for i in range(registers))
    torch.testing.assert_close(att.maps, expected[1][0, :, 0, prefix:].reshape(4, 4, 5))
    torch.testing.assert_close(att.prefix_share, expected[1][0, :, 0, :prefix].sum(-1))
    torch.testing.assert_close(
        att.rollout, attention_rollout([a[0] for a in expected[:2]])[0, prefix:].reshape(4, 5)
    )


def test_rollout_is_its_definition():
    torch.manual_seed(2)
    weights = [torch.randn(3, 6, 6).softmax(-1) for _ in range(4)]
    # the definition, in NumPy: A_hat = rownorm(mean_heads(A) + I); R = A_hat_L ... A_hat_1
    hats = []
    for block in weights:
        mixed = block.double().numpy().mean(0) + np.eye(6)
        hats.append(mixed / mixed.sum(1, keepdims=True))
    expected = reduce(lambda acc, hat: hat @ acc, hats, np.eye(6))
    np.testing.assert_allclose(attention_rollout(weights).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(attention_rollout(weights).sum(-1).numpy(), np.ones(6), rtol=1e-5)
    for token in (0, 4):  # one row alone, as attention() asks for the class token's
        np.testing.assert_allclose(
            attention_rollout(weights, token=token).numpy(), expected[token], rtol=1e-5
        )
    # attention of every token to itself only: each block's A_hat is the identity, and so is the rollout
    torch.testing.assert_close(attention_rollout([torch.eye(6).expand(2, 6, 6)] * 3), torch.eye(6))


def test_models_without_attention_point_to_similarity():
    bb = explorer.load_backbone("resnet18", pretrained=False, device="cpu")
    with pytest.raises(AttentionError, match="explorer.similarity"):
        explorer.attention(bb, torch.randn(1, 3, 64, 64))
    swin = explorer.load_backbone("swin_tiny_patch4_window7_224", pretrained=False, device="cpu")
    assert swin.attention_blocks() == []
    with pytest.raises(AttentionError, match="no attention blocks with a class token"):
        swin.attention_weights(torch.randn(1, 3, 224, 224), ["layers.0"])


def test_bad_arguments_name_the_fix():
    bb = _timm("vit_tiny_patch16_224")
    pixels = torch.randn(1, 3, 64, 64)
    with pytest.raises(InvalidArgumentError, match=r"blocks\.0 \.\.\. blocks\.11"):
        explorer.attention(bb, pixels, block="blocks.12")
    with pytest.raises(InvalidArgumentError, match="from -12 to 11"):
        explorer.attention(bb, pixels, block=12)
    with pytest.raises(InvalidArgumentError, match="block="):
        explorer.attention(bb, pixels, block=True)
    with pytest.raises(InvalidArgumentError, match="one image at a time"):
        explorer.attention(bb, torch.randn(2, 3, 64, 64))
    with pytest.raises(InvalidArgumentError, match="one image at a time"):
        explorer.attention(bb, [pixels[0], pixels[0]])
    with pytest.raises(InvalidArgumentError, match="rollout"):
        explorer.attention(bb, pixels, rollout="yes")
    with pytest.raises(AttentionError, match="Blocks with attention"):
        bb.attention_weights(pixels, ["norm"])
    with pytest.raises(InvalidArgumentError, match="dynamic_img_size=True"):
        explorer.attention(bb, torch.randn(1, 3, 64, 48))


def test_attention_over_channels_is_refused():
    xcit = explorer.load_backbone("xcit_nano_12_p16_224", pretrained=False, device="cpu")
    with pytest.raises(
        AttentionError, match=r"not over the 1 prefix and the patch tokens.*explorer\.similarity"
    ):
        explorer.attention(xcit, torch.randn(1, 3, 224, 224), block=0)
