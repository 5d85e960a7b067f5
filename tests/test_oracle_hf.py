"""explorer against transformers, over every AutoBackbone type it can build tiny: stage rules, default selection,
maps and shapes; plus the folder layouts of issue 11 (MaskFormer-Swin, a standalone TimmBackbone, DETR with a
timm backbone) and transformers' type rules for ``out_indices``.

Each backbone type gets a tiny config built here, a random-init model saved with ``save_pretrained`` (with the
config's own default ``out_features``), and is read back by explorer and, as the oracle, by transformers itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import explorer

transformers = pytest.importorskip("transformers")

_VIT = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, image_size=64)
_CONV = dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1])
_SWIN = dict(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], image_size=64, window_size=2)

# model_type: tiny config arguments
TINY = {
    "beit": dict(_VIT, patch_size=16),
    "bit": dict(_CONV, embedding_size=8, layer_type="bottleneck", num_groups=4),
    "convnext": dict(_CONV, image_size=64),
    "convnextv2": dict(_CONV, image_size=64),
    "dinov2": dict(_VIT, patch_size=8),
    "dinov2_with_registers": dict(_VIT, patch_size=8, num_register_tokens=2),
    "dinov3_convnext": dict(_CONV, image_size=64),
    "dinov3_vit": dict(_VIT, patch_size=8, num_register_tokens=2),
    "focalnet": dict(embed_dim=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], image_size=64),
    "hgnet_v2": dict(
        embedding_size=8,
        hidden_sizes=[16, 24, 32, 48],
        depths=[1, 1, 1, 1],
        stem_channels=[3, 8, 8],
        stage_in_channels=[8, 16, 24, 32],
        stage_mid_channels=[8, 8, 16, 16],
        stage_out_channels=[16, 24, 32, 48],
        stage_num_blocks=[1, 1, 1, 1],
        stage_numb_of_layers=[1, 1, 1, 1],
        stage_downsample=[False, True, True, True],
        stage_light_block=[False, False, True, True],
        stage_kernel_size=[3, 3, 5, 5],
    ),
    "hiera": dict(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], image_size=[64, 64]),
    "maskformer-swin": _SWIN,
    "pvt_v2": dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1]),
    "resnet": dict(_CONV, embedding_size=8, layer_type="basic"),
    "rt_detr_resnet": dict(_CONV, embedding_size=8, layer_type="basic"),
    "swin": _SWIN,
    "swinv2": _SWIN,
    "vitdet": dict(_VIT, patch_size=16, pretrain_image_size=64),
    "vitpose_backbone": dict(_VIT, patch_size=16, image_size=[64, 48]),
}


def _backbone_class(config):
    return transformers.AutoBackbone._model_mapping[type(config)]


@pytest.fixture(scope="module", params=sorted(TINY))
def saved(request, tmp_path_factory):
    """(model_type, folder, the config it was saved with) for a tiny random-init backbone."""
    model_type = request.param
    config = transformers.AutoConfig.for_model(model_type, **TINY[model_type])
    torch.manual_seed(0)
    model = _backbone_class(config)(config).eval()
    folder = tmp_path_factory.mktemp(model_type)
    model.save_pretrained(folder)
    return model_type, folder, config


def _oracle(folder, config, out_features):
    cls = _backbone_class(config)
    return cls.from_pretrained(str(folder), out_features=out_features).eval()


def test_stage_rules_default_selection_and_maps_match_transformers(saved):
    model_type, folder, config = saved
    bb = explorer.load_backbone(f"hf:{folder}", device="cpu")
    assert bb.stage_names == list(config.stage_names)
    assert bb.out_features == list(config.out_features)  # the saved selection, as transformers selects it
    every = [name for name in bb.stage_names if name in bb.served]
    assert every in (bb.stage_names, bb.stage_names[1:])  # every stage but, for some, the stem
    oracle = _oracle(folder, config, every)
    height, width = bb.preprocess.input_size
    x = torch.randn(1, 3, height, width)
    with torch.inference_mode():
        expected = dict(zip(every, oracle(x).feature_maps))
    bb.out_features = every
    maps = bb(x)
    table = {row["name"]: row["shape"] for row in bb.stage_table()}
    for name in every:
        if expected[name].ndim == 3:  # ViTPose outputs its patch tokens, row by row: explorer's maps are NCHW
            batch, tokens, channels = expected[name].shape
            patch = (
                config.patch_size if isinstance(config.patch_size, (list, tuple)) else [config.patch_size] * 2
            )
            grid = (height // patch[0], width // patch[1])
            assert tokens == grid[0] * grid[1]
            expected[name] = expected[name].transpose(1, 2).reshape(batch, channels, *grid)
        torch.testing.assert_close(
            maps[name], expected[name], rtol=1e-4, atol=1e-4, msg=f"{model_type} {name}"
        )
        assert table[name] == tuple(expected[name].shape[1:]), name
        assert bb.all_stages[bb.stage_names.index(name)].channels == expected[name].shape[1]


def test_a_saved_stage_is_the_default_selection(tmp_path):
    folder = tmp_path / "swin"
    transformers.SwinBackbone(transformers.SwinConfig(**_SWIN, out_indices=[1])).save_pretrained(folder)
    reference = transformers.SwinBackbone.from_pretrained(str(folder))
    bb = explorer.load_backbone(f"hf:{folder}", device="cpu")
    assert bb.out_features == list(reference.out_features) == ["stage1"]
    assert bb.out_indices == [1]


def test_maskformer_swin_folder_serves_every_stage_but_the_stem(tmp_path):
    config = transformers.MaskFormerSwinConfig(**_SWIN, out_indices=[1])
    transformers.MaskFormerSwinBackbone(config).save_pretrained(tmp_path)
    bb = explorer.load_backbone(f"hf:{tmp_path}", out_indices=[1, 3], device="cpu")
    reference = transformers.MaskFormerSwinBackbone.from_pretrained(str(tmp_path), out_indices=[1, 3]).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        expected = reference(x).feature_maps
    maps = bb(x)
    for got, want in zip(maps.values(), expected):
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="cannot output its stem"):
        bb.out_features = ["stem"]


@pytest.mark.parametrize("pretrained", [True, False])
def test_standalone_timm_backbone_folder(tmp_path, pretrained):
    config = transformers.TimmBackboneConfig(
        backbone="resnet18", out_indices=[1, 2], use_pretrained_backbone=False
    )
    saved_model = transformers.TimmBackbone(config).eval()
    saved_model.save_pretrained(tmp_path)
    bb = explorer.load_backbone(f"hf:{tmp_path}", pretrained=pretrained, device="cpu")
    assert bb.stage_names == ["act1", "layer1", "layer2", "layer3", "layer4"]
    assert bb.out_features == ["layer1", "layer2"]  # as saved
    x = torch.randn(1, 3, 64, 64)
    maps = bb(x)
    if pretrained:
        with torch.inference_mode():
            expected = saved_model(x).feature_maps
        for got, want in zip(maps.values(), expected):
            torch.testing.assert_close(got, want)
        bb.out_indices = [0, 1]  # stages before the saved ones have weights too
        assert bb(x).shapes == {"act1": (1, 64, 32, 32), "layer1": (1, 64, 16, 16)}
        with pytest.raises(ValueError, match="weights up to layer2 only") as refused:
            bb.out_indices = [3]
        assert "backbone checkpoint itself" not in str(refused.value)
    else:
        bb.out_indices = [3, 4]  # random weights: every stage
        assert bb(x).shapes == {"layer3": (1, 256, 4, 4), "layer4": (1, 512, 2, 2)}


def test_detr_with_a_timm_backbone(tmp_path):
    config = transformers.DetrConfig(
        use_timm_backbone=True,
        backbone="resnet18",
        use_pretrained_backbone=False,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=16,
        decoder_ffn_dim=16,
        num_queries=4,
    )
    model = transformers.DetrForObjectDetection(config).eval()
    model.save_pretrained(tmp_path)
    bb = explorer.load_backbone(f"hf:{tmp_path}", device="cpu")
    encoder = model.model.backbone.model  # the timm feature network DETR reads
    assert bb.stage_names == encoder.feature_info.module_name()
    assert bb.out_features == bb.stage_names  # the task's stages
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        expected = encoder(x)
    for got, want in zip(bb(x).values(), expected):
        torch.testing.assert_close(got, want)


def _transformers_accepts(out_indices) -> bool:
    try:
        transformers.SwinConfig(out_indices=out_indices)
    except Exception:  # noqa: BLE001 - StrictDataclassFieldValidationError and others
        return False
    return True


@pytest.mark.parametrize(
    "out_indices",
    [[True], [False, True], [np.int64(1)], [np.int32(2)], [1.0], ["1"], [1, 2], (1, 2), [-1], [None]],
    ids=repr,
)
def test_out_indices_types_accepted_exactly_where_transformers_accepts_them(out_indices):
    stage_names = ["stem", "stage1", "stage2", "stage3", "stage4"]
    try:
        explorer.select_stages(stage_names, out_indices=out_indices)
        accepted = True
    except ValueError as err:
        accepted = False
        assert "out_indices must be a list of integers" in str(err)
    assert accepted == _transformers_accepts(out_indices)
