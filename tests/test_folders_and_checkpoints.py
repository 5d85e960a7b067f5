"""Folders and checkpoints are what they say, and CAM scores what the grid shows.

- a transformers ``TimmBackbone`` folder serves every stage it has weights for, whatever selection it was saved
  with (``out_indices=[-1]`` holds them all);
- checkpoints from ``torch.compile`` (``_orig_mod.`` keys) and with an EMA copy load as timm's own helpers load
  them (the EMA copy wins), behind explorer's safe reader;
- CAM's default stage on models whose stages are no submodule gives a result or an error naming ``stage=``; a
  headless ``"stage:channel"`` target is scored on the stage's map after its own norm (grad-cam by hand on
  transformers' own ``feature_maps`` is the oracle); a ViTPose task folder without a processor file loads.
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

import explorer
from explorer.cam_gradcam import release


@pytest.mark.parametrize("saved", [[-1], [1], [0, 2], [4]])
def test_a_timm_backbone_folder_serves_every_stage_it_has_weights_for(transformers, tmp_path, saved):
    config = transformers.TimmBackboneConfig(
        backbone="resnet10t", use_pretrained_backbone=False, out_indices=saved
    )
    torch.manual_seed(0)
    model = transformers.TimmBackbone(config).eval()
    model.save_pretrained(tmp_path)
    last = max(i % 5 for i in saved)  # the feature network keeps the modules up to its last output
    bb = explorer.load_backbone(f"hf:{tmp_path}", device="cpu", out_indices=list(range(last + 1)))
    names = ["act1", "layer1", "layer2", "layer3", "layer4"]
    assert bb.stage_names == names and bb.out_features == names[: last + 1]
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        expected = dict(zip(model.out_features, model(x).feature_maps))
    maps = bb(x)
    for name, fmap in expected.items():
        assert torch.equal(maps[name], fmap), name
    if last < 4:  # no weights beyond: refused, with the reason
        with pytest.raises(explorer.StageSelectionError, match="weights up to"):
            bb.out_indices = [4]


def _resnet(num_classes: int = 10) -> torch.nn.Module:
    return timm.create_model("resnet10t", num_classes=num_classes).eval()


def test_compiled_and_ema_checkpoints_load_as_timm_loads_them(tmp_path):
    torch.manual_seed(0)
    live, ema = _resnet(), _resnet()
    compiled = {f"_orig_mod.{k}": v for k, v in live.state_dict().items()}
    path = tmp_path / "compiled.safetensors"
    save_file(compiled, str(path))
    bb = explorer.load_backbone(str(path), arch="resnet10t", num_classes=10, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(bb.model.state_dict().values(), live.state_dict().values()))
    training = {
        "epoch": 3,
        "state_dict": {f"module.{k}": v for k, v in live.state_dict().items()},
        "state_dict_ema": {f"_orig_mod.{k}": v for k, v in ema.state_dict().items()},
    }
    path = tmp_path / "checkpoint.pth.tar"
    torch.save(training, path)
    bb = explorer.load_backbone(str(path), arch="resnet10t", num_classes=10, device="cpu")
    oracle = timm.models.load_state_dict(str(path), use_ema=True)  # timm's own reading of the same file
    assert list(bb.model.state_dict()) == list(oracle)
    assert all(torch.equal(bb.model.state_dict()[k], v) for k, v in oracle.items())
    assert all(torch.equal(bb.model.state_dict()[k], v) for k, v in ema.state_dict().items())
    training["model_ema"] = training.pop("state_dict_ema")
    torch.save(training, path)
    bb = explorer.load_backbone(str(path), arch="resnet10t", num_classes=10, device="cpu")
    assert all(torch.equal(bb.model.state_dict()[k], v) for k, v in ema.state_dict().items())


def test_a_pickle_ema_checkpoint_that_runs_code_is_still_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict_ema": _resnet().state_dict(), "hook": Evil()}, path)
    with pytest.raises(explorer.UnsafeCheckpointError, match="nothing in it was executed"):
        explorer.load_backbone(str(path), arch="resnet10t", num_classes=10, device="cpu")


@pytest.mark.parametrize(
    "name, options",
    [
        ("mvitv2_tiny", {"img_size": 64}),
        ("twins_svt_small", {"depths": (1, 1, 1, 1)}),
        ("hrnet_w18_small", {}),
        ("mobilenetv5_300m", {}),
    ],
)
def test_the_default_stage_never_raises_a_bare_key_error(name, options):
    bb = explorer.load_backbone(name, pretrained=False, device="cpu", **options)
    x = torch.randn(1, 3, 64, 64)
    try:
        result = explorer.cam(bb, x)[0]
    except explorer.CAMError as err:  # the stage is no module of its own: the message names the fix
        assert "stage=" in str(err) and "list_layers" in str(err)
    else:
        assert result.map.shape == (64, 64) and torch.isfinite(result.map).all()


def test_a_headless_stage_channel_target_is_scored_after_the_stages_norm(transformers, tmp_path):
    gc_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    config = transformers.ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], image_size=64)
    torch.manual_seed(0)
    model = transformers.ConvNextBackbone(config)
    with torch.no_grad():  # norms that change the map: a score before them would differ
        for norm in model.hidden_states_norms.values():
            norm.weight.normal_()
            norm.bias.normal_()
    model.eval().save_pretrained(tmp_path)
    bb = explorer.load_backbone(f"hf:{tmp_path}", device="cpu")
    oracle = transformers.ConvNextBackbone.from_pretrained(
        str(tmp_path), out_features=list(bb.stage_names)
    ).eval()
    x = torch.randn(2, 3, 64, 64)
    ours = explorer.cam(bb, x, stage="stage2", target="stage3:5")

    class Stage3(torch.nn.Module):  # the map the grid shows: transformers' own (normed) feature map
        def __init__(self) -> None:
            super().__init__()
            self.model = oracle

        def forward(self, pixels):
            return self.model(pixels).feature_maps[list(oracle.out_features).index("stage3")].mean((2, 3))

    with torch.no_grad():
        shown = bb.capture(x, ["stage3"])["stage3"]
        torch.testing.assert_close(shown, oracle(x).feature_maps[3])
    explainer = gc_cam.GradCAM(model=Stage3(), target_layers=[oracle.encoder.stages[1]])
    try:
        expected = explainer(x, targets=[ClassifierOutputTarget(5)] * 2)
    finally:
        release(explainer)
    for result, reference in zip(ours, expected):
        assert result.target_name == "stage3 channel 5"
        np.testing.assert_allclose(result.map.numpy(), reference, atol=1e-5)


def test_a_vitpose_task_folder_without_a_processor_file_loads_at_its_backbones_size(transformers, tmp_path):
    backbone = transformers.VitPoseBackboneConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=16,
        image_size=[64, 48],
        out_indices=[2],
    )
    transformers.VitPoseForPoseEstimation(
        transformers.VitPoseConfig(backbone_config=backbone)
    ).save_pretrained(tmp_path)
    assert not (tmp_path / "preprocessor_config.json").exists()
    with pytest.raises(OSError):  # transformers itself has no processor for the folder
        transformers.AutoImageProcessor.from_pretrained(str(tmp_path))
    bb = explorer.load_backbone(f"hf:{tmp_path}", device="cpu")
    assert bb.preprocess.input_size == (64, 48) and bb.head is None
    assert bb.extract(Image.new("RGB", (300, 200)))[bb.out_features[-1]].shape[-2:] == (4, 3)
