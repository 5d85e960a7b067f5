"""transformers sources: AutoBackbone folders, backbones inside task models, timm inside transformers."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from PIL import Image

import explorer

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def swin_folder(tmp_path_factory):
    """A transformers Swin-tiny backbone saved with save_pretrained (random weights, stage1 as its output)."""
    folder = tmp_path_factory.mktemp("swin")
    model = transformers.SwinBackbone(transformers.SwinConfig(out_indices=[1])).eval()
    model.save_pretrained(folder)
    return folder, model


def test_swin_tiny_stage1_seed_example(swin_folder):
    folder, reference = swin_folder
    bb = explorer.load_backbone(f"hf:{folder}", out_indices=(1,), device="cpu")
    assert bb.stage_names == ["stem", "stage1", "stage2", "stage3", "stage4"]
    assert bb.weights == "file"
    x = torch.randn(1, 3, 224, 224)
    maps = bb(x)
    assert list(maps.shapes.values()) == [(1, 96, 56, 56)]
    with torch.inference_mode():
        expected = reference(x).feature_maps[0]
    assert torch.allclose(maps["stage1"], expected, atol=1e-5)  # transformers' own output, norm included


def test_stage_names_and_any_layer_in_one_pass(swin_folder):
    folder, _ = swin_folder
    bb = explorer.load_backbone(f"hf:{folder}", out_indices=[1], device="cpu")
    x = torch.randn(1, 3, 224, 224)
    maps = bb.capture(x, layers=["stage1", "swin.encoder.layers.0.blocks.0"])
    assert maps.shapes == {"stage1": (1, 96, 56, 56), "swin.encoder.layers.0.blocks.0": (1, 96, 56, 56)}
    assert torch.equal(maps["stage1"], bb(x)["stage1"])  # the model's own stage output, its norm included


def test_swin_reselect_and_channels(swin_folder):
    folder, _ = swin_folder
    bb = explorer.load_backbone(f"hf:{folder}", out_features=["stage2", "stage4"], device="cpu")
    assert bb.channels == [192, 768] and bb.reductions == [8, 32]
    bb.out_indices = [0, -1]
    assert bb(torch.randn(1, 3, 224, 224)).shapes == {"stem": (1, 96, 56, 56), "stage4": (1, 768, 7, 7)}


def test_random_init_from_a_folder(swin_folder):
    folder, reference = swin_folder
    torch.manual_seed(1)  # not the seed the reference was built with
    bb = explorer.load_backbone(f"hf:{folder}", pretrained=False, device="cpu")
    assert bb.weights == "random" and bb.out_features == ["stage1"]  # the selection it was saved with
    assert not torch.equal(
        bb.model.swin.embeddings.patch_embeddings.projection.weight,
        reference.swin.embeddings.patch_embeddings.projection.weight,
    )


def test_backbone_found_inside_a_task_model(tmp_path):
    config = transformers.MaskFormerConfig(
        backbone_config=transformers.SwinConfig(out_features=["stage1", "stage2", "stage3", "stage4"])
    )
    transformers.MaskFormerForInstanceSegmentation(config).save_pretrained(tmp_path)
    bb = explorer.load_backbone(f"hf:{tmp_path}", pretrained=False, out_features=["stage2"], device="cpu")
    assert type(bb.model).__name__ == "MaskFormerSwinBackbone"
    assert bb(torch.randn(1, 3, 224, 224)).shapes == {"stage2": (1, 192, 28, 28)}
    with pytest.raises(ValueError, match="outputs .* only"):
        bb.out_indices = [0]


def test_timm_backbone_inside_transformers(tmp_path):
    config = transformers.TimmBackboneConfig(
        backbone="resnet18", use_pretrained_backbone=False, out_indices=(1, 2)
    )
    model = transformers.TimmBackbone(config).eval()
    model.save_pretrained(tmp_path)
    bb = explorer.load_backbone(f"hf:{tmp_path}", out_indices=[1, 2], device="cpu")
    assert bb.stage_names == list(model.stage_names) == ["act1", "layer1", "layer2", "layer3", "layer4"]
    x = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        expected = model(x).feature_maps
    maps = bb(x)
    assert torch.equal(maps["layer1"], expected[0]) and torch.equal(maps["layer2"], expected[1])


def test_convnext_and_preprocessor_config(tmp_path):
    config = transformers.ConvNextConfig(hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 9, 3])
    transformers.ConvNextBackbone(config).save_pretrained(tmp_path)
    processor = {
        "size": {"shortest_edge": 256},
        "crop_pct": 0.9,
        "image_mean": [0.5] * 3,
        "image_std": [0.25] * 3,
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(processor))
    bb = explorer.load_backbone(f"hf:{tmp_path}", out_indices=[2], device="cpu")
    assert bb.preprocess.input_size == (256, 256)
    assert bb.preprocess.settings["crop_pct"] == 0.9 and bb.preprocess.settings["image_mean"] == [0.5] * 3
    assert bb.extract(torch.rand(3, 300, 400)).shapes == {"stage2": (1, 192, 32, 32)}


def test_hub_id_offline_fails_fast():
    with pytest.raises(explorer.WeightsUnavailableError, match="HF_HUB_OFFLINE"):
        explorer.load_backbone("hf:microsoft/resnet-50")


def test_hf_spec_without_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(explorer.MissingDependencyError, match=r'pip install "explorer\[hf\]"'):
        explorer.load_backbone("hf:microsoft/resnet-50")


def test_a_vitpose_folder_without_a_processor_file_runs_at_its_config_size(tmp_path):
    config = transformers.VitPoseBackboneConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=16,
        image_size=[64, 48],
    )
    transformers.VitPoseBackbone(config).save_pretrained(tmp_path)
    assert not (tmp_path / "preprocessor_config.json").exists()
    bb = explorer.load_backbone(f"hf:{tmp_path}", device="cpu")
    assert bb.preprocess.input_size == (64, 48)
    image = Image.new("RGB", (300, 200), (10, 200, 30))
    assert bb.pixel_values(image).shape == (1, 3, 64, 48)
    assert bb.extract(image)[bb.out_features[-1]].shape[-2:] == (4, 3)


def test_stage_and_module_name_are_the_one_lookup_by_name(tiny_hf_folder):
    bb = explorer.load_backbone(f"hf:{tiny_hf_folder}", pretrained=False, device="cpu")
    assert bb.stage_names == ["stem", "stage1", "stage2"]
    assert bb.stage("stage2") is bb.all_stages[2] and bb.stage("stage2").reduction == 8
    assert bb.module_name("stage1") == bb.stage("stage1").module != "stage1"  # a stage: its module
    assert bb.module_name("embedder") == "embedder"  # a layer: itself
    with pytest.raises(explorer.LayerNotFoundError, match="Closest names: stage2"):
        bb.stage("stage22")
