"""timm sources: shapes, channels and reductions, NCHW layouts, early stop, hooks, weights and specs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

import explorer
from explorer.backbones.timm import timm_backbone
from explorer.errors import UnknownBackboneError, WeightsUnavailableError

# name: (stage_names, channels, reductions, shape of the last stage for one 224x224 image)
EXPECTED = {
    "resnet18": (
        ["act1", "layer1", "layer2", "layer3", "layer4"],
        [64, 64, 128, 256, 512],
        [2, 4, 8, 16, 32],
        (1, 512, 7, 7),
    ),
    "convnext_tiny": (
        ["stages.0", "stages.1", "stages.2", "stages.3"],
        [96, 192, 384, 768],
        [4, 8, 16, 32],
        (1, 768, 7, 7),
    ),
    "swin_tiny_patch4_window7_224": (
        ["layers.0", "layers.1", "layers.2", "layers.3"],
        [96, 192, 384, 768],
        [4, 8, 16, 32],
        (1, 768, 7, 7),
    ),
    "vit_small_patch16_224": ([f"blocks.{i}" for i in range(12)], [384] * 12, [16] * 12, (1, 384, 14, 14)),
    "tf_efficientnet_lite0": (
        ["blocks.0", "blocks.1", "blocks.2", "blocks.4", "blocks.6"],
        [16, 24, 40, 112, 320],
        [2, 4, 8, 16, 32],
        (1, 320, 7, 7),
    ),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_stages_channels_reductions_and_shapes(name, samples):
    stage_names, channels, reductions, last_shape = EXPECTED[name]
    bb = explorer.load_backbone(
        name, out_indices=list(range(len(stage_names))), pretrained=False, device="cpu"
    )
    assert bb.stage_names == stage_names
    assert bb.channels == channels
    assert bb.reductions == reductions
    assert bb.weights == "random"
    maps = bb.extract(samples["chelsea"])
    assert list(maps) == stage_names
    for stage, (key, fmap) in zip(bb.stages, maps.items()):
        assert fmap.shape == (1, stage.channels, 224 // stage.reduction, 224 // stage.reduction), key
    assert maps.shapes[stage_names[-1]] == last_shape


def test_swin_nhwc_becomes_nchw():
    bb = explorer.load_backbone(
        "swin_tiny_patch4_window7_224", out_indices=[1], pretrained=False, device="cpu"
    )
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        _, intermediates = bb.model.forward_intermediates(
            x, indices=[1], output_fmt="NCHW", intermediates_only=False
        )
    assert torch.allclose(bb(x)["layers.1"], intermediates[0], atol=1e-5)


def test_vit_tokens_become_a_grid_without_the_class_token_non_square():
    bb = explorer.load_backbone(
        "vit_small_patch16_224", out_indices=[3], pretrained=False, device="cpu", dynamic_img_size=True
    )
    x = torch.randn(1, 3, 224, 320)
    tokens = {}
    handle = bb.model.blocks[3].register_forward_hook(lambda m, a, out: tokens.setdefault("t", out))
    try:
        maps = bb(x)
    finally:
        handle.remove()
    assert maps["blocks.3"].shape == (1, 384, 14, 20)
    patch_tokens = tokens["t"][:, 1:, :]  # drop the class token
    assert torch.equal(maps["blocks.3"][0, :, 2, 5], patch_tokens[0, 2 * 20 + 5])


def test_out_features_and_reselection():
    bb = explorer.load_backbone("resnet18", out_features=["layer2"], pretrained=False, device="cpu")
    assert bb.out_indices == [2]
    bb.out_indices = (1, -1)
    assert bb.out_features == ["layer1", "layer4"]
    assert list(bb(torch.randn(1, 3, 64, 64))) == ["layer1", "layer4"]
    bb.out_features = None
    assert bb.out_features == ["layer4"]
    with pytest.raises(ValueError, match="out_features must be a subset of stage_names"):
        bb.out_features = ["stage9"]
    assert bb.out_features == ["layer4"]  # a refused selection changes nothing
    with pytest.raises(ValueError, match="out_indices must be a list, got <class 'int'>"):
        bb.out_indices = 2
    assert bb.out_indices == [4]


def _count_calls(model, names):
    counts = dict.fromkeys(names, 0)
    modules = dict(model.named_modules())
    handles = [
        modules[name].register_forward_hook(
            lambda m, a, o, name=name: counts.__setitem__(name, counts[name] + 1)
        )
        for name in names
    ]
    return counts, handles


@pytest.mark.parametrize(
    ("name", "selected", "later"),
    [
        ("resnet18", [1], ["layer2", "layer3", "layer4"]),
        ("tf_efficientnet_lite0", [0], ["blocks.1", "blocks.3", "blocks.6", "conv_head"]),
        ("vit_small_patch16_224", [2], ["blocks.3", "blocks.11", "norm"]),
    ],
)
def test_early_stop_skips_later_stages(name, selected, later):
    bb = explorer.load_backbone(name, out_indices=selected, pretrained=False, device="cpu")
    stage = bb.stages[0].module
    counts, handles = _count_calls(bb.model, [stage, *later])
    try:
        bb(torch.randn(1, 3, 224, 224))
    finally:
        for handle in handles:
            handle.remove()
    assert counts[stage] == 1
    assert all(counts[name] == 0 for name in later), counts


def _hook_counts(model):
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(getattr(m, "_forward_hooks_with_kwargs", {}))
        for m in model.modules()
    )


def test_hooks_are_removed_on_success_early_stop_and_error():
    bb = explorer.load_backbone("resnet18", out_indices=[1, 3], pretrained=False, device="cpu")
    before = _hook_counts(bb.model)
    bb(torch.randn(1, 3, 64, 64))
    bb.capture(torch.randn(1, 3, 64, 64), layers=["layer2.0.conv1", "layer4"])
    assert _hook_counts(bb.model) == before

    def explode(module, args, output):
        raise RuntimeError("boom in layer2")

    handle = bb.model.layer2.register_forward_hook(explode)
    with pytest.raises(RuntimeError, match="boom in layer2"):
        bb(torch.randn(1, 3, 64, 64))
    handle.remove()
    assert _hook_counts(bb.model) == before
    with pytest.raises(explorer.LayerNotFoundError):
        bb.capture(torch.randn(1, 3, 64, 64), layers=["layer1", "nope"])
    assert _hook_counts(bb.model) == before


def test_unknown_layer_lists_closest_names_and_list_layers():
    bb = explorer.load_backbone("resnet18", pretrained=False, device="cpu")
    with pytest.raises(explorer.LayerNotFoundError) as info:
        bb.capture(torch.randn(1, 3, 64, 64), layers=["layer2.0.conv9"])
    message = str(info.value)
    assert "layer2.0.conv1" in message and "list_layers" in message
    assert "layer2.0.conv1" in explorer.list_layers(bb)


def test_capture_any_layer_and_stage_names():
    bb = explorer.load_backbone("resnet18", pretrained=False, device="cpu")
    maps = bb.capture(torch.randn(2, 3, 224, 224), layers=["layer2.0.conv1", "layer1", "fc"])
    assert maps.shapes == {
        "layer2.0.conv1": (2, 128, 28, 28),
        "layer1": (2, 64, 56, 56),
        "fc": (2, 1000, 1, 1),
    }


def test_captures_are_not_changed_by_later_in_place_operations():
    bb = explorer.load_backbone("resnet18", pretrained=False, device="cpu")
    x = torch.randn(1, 3, 64, 64)
    maps = bb.capture(x, layers=["layer1.1.bn2", "layer1.1"])  # the block adds its shortcut to bn2 in place
    assert not torch.equal(
        maps["layer1.1.bn2"], maps["layer1.1"]
    )  # a view of bn2 would equal the block output


def test_precision_runs_under_autocast_and_leaves_the_weights():
    bb = explorer.load_backbone("resnet18", out_indices=[2], pretrained=False, device="cpu")
    x = torch.randn(1, 3, 64, 64)
    reference = bb(x)["layer2"]
    bb.precision = torch.bfloat16
    low = bb(x)["layer2"]
    assert low.dtype == torch.bfloat16 and bb.dtype == torch.float32
    assert torch.allclose(low.float(), reference, atol=0.1, rtol=0.05)
    bb.precision = None
    assert torch.equal(bb(x)["layer2"], reference)  # back to exactly float32


def test_inference_mode_eval_and_device():
    bb = explorer.load_backbone("resnet18", pretrained=False)
    assert bb.device == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert not bb.model.training
    fmap = bb(torch.randn(1, 3, 64, 64))["layer4"]
    assert fmap.is_inference() and fmap.device.type == bb.device.type


def test_unknown_name_lists_closest():
    with pytest.raises(UnknownBackboneError, match="resnet18"):
        explorer.load_backbone("resnet-18", pretrained=False)


@pytest.mark.timeout(60)  # a hang guard, not a speed figure
def test_pretrained_without_hub_fails_fast_and_names_alternatives():
    with pytest.raises(WeightsUnavailableError) as info:
        explorer.load_backbone("resnet18", pretrained=True)
    message = str(info.value)
    assert '"default"' in message and "pretrained=False" in message and "local checkpoint" in message


def _write_hub_cache(cache: Path, repo_id: str, model: torch.nn.Module) -> None:
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef")
    config = {
        "architecture": "resnet18",
        "num_classes": 1000,
        "num_features": 512,
        "pretrained_cfg": {**model.pretrained_cfg, "input_size": [3, 160, 160], "crop_pct": 0.95},
    }
    (snapshot / "config.json").write_text(json.dumps(config))
    save_file(model.state_dict(), str(snapshot / "model.safetensors"))


def test_hf_hub_spec_loads_from_the_cache_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    source = timm.create_model("resnet18").eval()
    _write_hub_cache(tmp_path, "timm/resnet18.a1_in1k", source)
    bb = explorer.load_backbone("hf-hub:timm/resnet18.a1_in1k", out_indices=[2], device="cpu")
    assert bb.weights == "cache"
    assert bb.preprocess.input_size == (160, 160) and bb.preprocess.settings["crop_pct"] == 0.95
    assert torch.equal(bb.model.layer2[0].conv1.weight, source.layer2[0].conv1.weight)
    x = torch.randn(1, 3, 160, 160)
    with torch.inference_mode():
        expected = source.layer2(source.layer1(source.maxpool(source.act1(source.bn1(source.conv1(x))))))
    assert torch.allclose(bb(x)["layer2"], expected, atol=1e-5)


def test_local_safetensors_and_pth_with_arch(tmp_path):
    source = timm.create_model("resnet18").eval()
    save_file(source.state_dict(), str(tmp_path / "weights.safetensors"))
    torch.save({"state_dict": source.state_dict()}, tmp_path / "weights.pth")
    for path in (tmp_path / "weights.safetensors", tmp_path / "weights.pth"):
        bb = explorer.load_backbone(str(path), arch="resnet18", out_indices=[4], device="cpu")
        assert bb.weights == "file"
        assert torch.equal(bb.model.fc.weight, source.fc.weight)


def test_timm_folder(tmp_path):
    source = timm.create_model("resnet18").eval()
    timm.models.save_for_hf(source, str(tmp_path))
    bb = explorer.load_backbone(str(tmp_path), out_indices=[1], device="cpu")
    assert bb.weights == "file" and bb.channels == [64]
    assert torch.equal(bb.model.conv1.weight, source.conv1.weight)


def test_list_backbones():
    assert explorer.list_backbones()[0] == "default"
    found = explorer.list_backbones("resnet1*")
    assert "resnet18" in found and all(name.startswith("resnet1") for name in found)


# -- issue 11: agreement with timm's own answers ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("deit_tiny_distilled_patch16_224", 2),
        ("vit_small_patch14_reg4_dinov2", 5),
        ("vit_tiny_patch16_224", 1),
    ],
)
def test_any_layer_drops_exactly_the_models_prefix_tokens(name, prefix):
    bb = explorer.load_backbone(name, pretrained=False, device="cpu", img_size=56, depth=2)
    assert bb.model.num_prefix_tokens == prefix  # class + distillation, class + 4 registers, class
    x = torch.randn(1, 3, 56, 56)
    maps = bb.capture(x, layers=["blocks.0", "blocks.1.mlp.fc2"])
    with torch.inference_mode():
        tokens = bb.model.blocks[0](bb.model.norm_pre(bb.model._pos_embed(bb.model.patch_embed(x))))
        expected = bb.model.forward_intermediates(x, indices=[0], intermediates_only=True)[0]
    grid = 56 // bb.model.patch_embed.patch_size[0]
    assert tokens.shape[1] == prefix + grid * grid
    assert torch.equal(maps["blocks.0"], tokens[:, prefix:].transpose(1, 2).reshape(1, -1, grid, grid))
    torch.testing.assert_close(maps["blocks.0"], expected)
    assert maps.shapes["blocks.1.mlp.fc2"] == (1, bb.channels[0], grid, grid)
    assert all(maps.aligned.values())


def test_swin_layers_inside_stages_are_channels_last_and_window_attention_is_flagged():
    bb = explorer.load_backbone(
        "swin_tiny_patch4_window7_224", pretrained=False, device="cpu", depths=(1, 1, 1, 1)
    )
    x = torch.randn(1, 3, 224, 224)
    names = [
        "layers.1.blocks.0",
        "layers.2.downsample",
        "layers.1.blocks.0.attn",
        "patch_embed.proj",
        "head.fc",
    ]
    maps = bb.capture(x, layers=["layers.1", *names])
    with torch.inference_mode():
        stage2_input = bb.model.layers[1].downsample(bb.model.layers[0](bb.model.patch_embed(x)))
        block = bb.model.layers[1].blocks[0](stage2_input)
    assert torch.equal(maps["layers.1.blocks.0"], block.permute(0, 3, 1, 2))  # (1, 192, 28, 28), not NHWC
    assert maps.shapes["layers.2.downsample"] == (1, 384, 14, 14)
    assert maps.shapes["patch_embed.proj"] == (1, 96, 56, 56)  # a convolution stays NCHW
    assert maps.aligned == {
        "layers.1": True,
        "layers.1.blocks.0": True,
        "layers.2.downsample": True,
        "layers.1.blocks.0.attn": False,  # 16 windows of 7x7 as the batch
        "patch_embed.proj": True,
        "head.fc": False,  # one vector per image
    }
    assert "windows" in maps.unaligned["layers.1.blocks.0.attn"]
    assert maps.shapes["layers.1.blocks.0.attn"][0] == 16
    assert maps.cpu().aligned == maps.aligned  # the flags travel with copies


def test_hiera_stage_maps_are_in_image_order():
    bb = explorer.load_backbone("hiera_tiny_224", pretrained=False, device="cpu", stages=(1, 1, 2, 1))
    bb.out_indices = [0, 1, 2, 3]
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        expected = bb.model.forward_intermediates(x, indices=[0, 1, 2, 3], intermediates_only=True)
    maps = bb(x)
    for got, want in zip(maps.values(), expected):
        torch.testing.assert_close(got, want)
    # a plain hook on the stage module sees the unrolled token order: another map (what explorer gave before)
    with explorer.capture(bb.model, ["blocks.0"]) as hooked:
        bb.model(x)
    assert hooked["blocks.0"].shape == maps["blocks.0"].shape
    assert not torch.allclose(hooked["blocks.0"], maps["blocks.0"])
    inner = bb.capture(x, ["blocks.0", "blocks.0.mlp"])  # layers inside blocks: unrolled, and said so
    assert inner.aligned == {"blocks.0": True, "blocks.0.mlp": False}
    # one source of truth: what capture flags is what out_of_order (class-activation maps) says
    assert inner.unaligned["blocks.0.mlp"] == bb.out_of_order("blocks.0.mlp") != ""
    assert bb.out_of_order("blocks.0") != "" and bb.out_of_order(bb.all_stages[-1].module) == ""
    assert bb.out_of_order("patch_embed") == ""  # before the unroll: in image order


def test_repr_runs_no_model_and_names_the_selection():
    bb = explorer.load_backbone("resnet18", pretrained=False, device="cpu", out_indices=[1, 2])
    calls = []
    handle = bb.model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        text = repr(bb)
    finally:
        handle.remove()
    assert calls == [] and "shape" not in text
    assert text.splitlines() == [
        "Backbone('resnet18', weights='random', device='cpu', input=(224, 224))",
        "   1 layer1    64 ch /4",
        "   2 layer2   128 ch /8",
    ]
    assert bb.weights == bb.weights_origin == "random"


@pytest.mark.parametrize(
    ("name", "size"), [("inception_v3", (299, 299)), ("legacy_xception", (299, 250)), ("resnet18", (97, 131))]
)
def test_stage_table_shapes_equal_the_forward(name, size):
    bb = explorer.load_backbone(name, pretrained=False, device="cpu")
    bb.out_indices = list(range(len(bb.stage_names)))
    maps = bb(torch.randn(1, 3, *size))
    assert {row["name"]: row["shape"] for row in bb.stage_table(input_size=size)} == {
        name: tuple(fmap.shape[1:]) for name, fmap in maps.items()
    }


def test_vit_refuses_other_sizes_up_front_unless_built_dynamic():
    bb = explorer.load_backbone("vit_tiny_patch16_224", pretrained=False, device="cpu", depth=2)
    with pytest.raises(explorer.InvalidArgumentError, match="dynamic_img_size=True"):
        bb.stage_table(input_size=(224, 320))
    with pytest.raises(explorer.InvalidArgumentError, match="does not accept a 224x320 input"):
        bb(torch.randn(1, 3, 224, 320))
    dynamic = explorer.load_backbone(
        "vit_tiny_patch16_224", pretrained=False, device="cpu", depth=2, dynamic_img_size=True
    )
    table = {row["name"]: row["shape"] for row in dynamic.stage_table(input_size=(224, 320))}
    assert (
        dynamic(torch.randn(1, 3, 224, 320)).shapes["blocks.1"] == (1, *table["blocks.1"]) == (1, 192, 14, 20)
    )


def test_a_callers_model_is_left_as_it_was_found():
    model = timm.create_model("resnet18")  # train mode, trainable
    mean_before = model.bn1.running_mean.clone()
    bb = timm_backbone(model, spec="mine", weights="random", device="cpu")
    assert bb(torch.randn(2, 3, 64, 64))["layer4"].shape == (2, 512, 2, 2)
    assert model.training and all(module.training for module in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    assert torch.equal(model.bn1.running_mean, mean_before)  # it ran in eval mode: no statistics updated
    own = explorer.load_backbone("resnet18", pretrained=False, device="cpu")
    assert not own.model.training  # a model explorer built is in eval mode
