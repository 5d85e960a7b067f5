"""explorer against timm, over a generated set of architectures: stage rules, maps, shapes before and after.

``ARCHITECTURES`` holds, for each model family (timm module) that has one, its smallest small variant (fewest
parameters among the names with a size word: atto, nano, tiny, small, ``_s``, ``18``, ...; counted on the meta
device by ``_smallest_per_family`` below, kept here because counting takes a minute), plus the cases of issue 11.
Families whose smallest member has over 20M parameters and no depth argument to shrink it are left out (rdnet,
sequencer, res2net, selecsls); so are those with no small member at all (beit, nasnet, tnt, volo, vgg, ...).
Each is built twice with random init and the same seed: once by explorer, once by timm; the oracle for stage maps
is timm's own ``forward_intermediates`` (the layout rule timm's ``features_only`` getter and transformers'
``TimmBackbone`` use).
"""

from __future__ import annotations

import re

import pytest
import timm
import torch

import explorer

# fmt: off
ARCHITECTURES = [
    "mobileone_s1", "cait_xxs24_224", "coat_tiny", "convit_tiny", "convnext_atto_rms", "cpubone_nano",
    "crossvit_tiny_240", "cs3darknet_focus_s", "cspnext_tiny", "davit_tiny", "deit_tiny_patch16_224",
    "edgenext_xx_small", "efficientformerv2_s0", "mobilenetv2_035", "efficientvim_m1", "efficientvit_b0",
    "efficientvit_m0", "vit_tiny_patch16_dinov3_qkvb", "fasternet_t0", "fastvit_t8", "focalnet_tiny_srf",
    "gcvit_xxtiny", "ghostnet_050", "hgnetv2_b0", "hiera_tiny_224", "sam2_hiera_tiny", "hrnet_w18_small",
    "iformer_t", "inception_next_atto", "lcnetv2_small", "levit_128s", "lowformer_b0", "mambaout_femto",
    "maxvit_pico_rw_256", "poolformerv2_s12", "mixer_s16_224", "mobilenetv3_small_050", "mobilevit_xxs",
    "mvitv2_tiny", "nest_tiny", "nf_regnet_b0", "pit_xs_224", "pvt_v2_b0", "repghostnet_050",
    "repvit_m1", "resnet18", "resnetv2_18", "rexnet_100", "legacy_seresnet18", "shvit_s1",
    "skresnet18", "starnet_s050", "swiftformer_xs", "swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256",
    "swinv2_cr_tiny_224", "tiny_vit_5m_224", "twins_svt_small", "visformer_tiny", "vit_tiny_patch16_224",
    "vit_tiny_r_s16_p8_224", "vit_srelpos_small_patch16_224", "vitamin_small_224", "xcit_nano_12_p8_224",
    # families without a size word in any name: their smallest member
    "densenet121", "dla34", "dpn68", "regnetx_002", "resnest14d", "hardcorenas_a", "efficientformer_l1",
    "ese_vovnet19b_slim", "inception_v3", "legacy_xception",
    # the cases of issue 11
    "twins_pcpvt_small", "deit_tiny_distilled_patch16_224", "vit_small_patch14_reg4_dinov2",
    "convnext_atto", "tf_efficientnet_lite0", "regnety_002",
]
# fmt: on

# fewer blocks (and a smaller input where the model is built for one) keep the sweep fast; stage rules stay
SMALL = {
    "swin_tiny_patch4_window7_224": {"depths": (1, 1, 1, 1)},
    "swinv2_tiny_window8_256": {"depths": (1, 1, 1, 1)},
    "swinv2_cr_tiny_224": {"depths": (1, 1, 1, 1)},
    "hiera_tiny_224": {"stages": (1, 1, 2, 1)},
    "sam2_hiera_tiny": {"stages": (1, 1, 2, 1)},
    "twins_svt_small": {"depths": (1, 1, 1, 1)},
    "twins_pcpvt_small": {"depths": (1, 1, 1, 1)},
    "davit_tiny": {"depths": (1, 1, 1, 1)},
    "vitamin_small_224": {"depth": 2},
    "vit_small_patch14_reg4_dinov2": {"img_size": 70, "depth": 3},
    "vit_tiny_patch16_dinov3_qkvb": {"img_size": 64, "depth": 3},
    "deit_tiny_patch16_224": {"img_size": 64, "depth": 3},
    "deit_tiny_distilled_patch16_224": {"img_size": 64, "depth": 3},
    "vit_tiny_patch16_224": {"img_size": 64, "depth": 3},
    "vit_srelpos_small_patch16_224": {"img_size": 64, "depth": 3},
    "vit_tiny_r_s16_p8_224": {"depth": 3},
    "xcit_nano_12_p8_224": {"img_size": 64, "depth": 3},
    "cait_xxs24_224": {"img_size": 64, "depth": 3},
    "mixer_s16_224": {"img_size": 64},
    "pit_xs_224": {"img_size": 64},
    "coat_tiny": {"img_size": 64},
    "maxvit_pico_rw_256": {"img_size": 128},
}


def _smallest_per_family() -> dict[
    str, str
]:  # pragma: no cover - how ARCHITECTURES was made (about a minute)
    families: dict[str, list[str]] = {}
    for name in timm.list_models():
        families.setdefault(timm.models._registry._model_to_module[name], []).append(name)
    size_word = re.compile(
        r"(atto|femto|pico|nano|tiny|small|mini|micro|xs|_t$|_s$|18|b0|_s\d|_t\d|_m\d|050)"
    )
    picked = {}
    for family, names in families.items():
        counts = {}
        for name in filter(size_word.search, names):
            with torch.device("meta"):
                counts[name] = sum(p.numel() for p in timm.create_model(name).parameters())
        if counts and min(counts.values()) < 30e6:
            picked[family] = min(counts, key=counts.get)
    return picked


def _input_size(name: str, model: torch.nn.Module) -> tuple[int, int]:
    if "img_size" in SMALL.get(name, {}):
        size = SMALL[name]["img_size"]
        return (size, size)
    if model.pretrained_cfg.get("fixed_input_size"):
        return tuple(timm.data.resolve_data_config({}, model=model)["input_size"][1:])
    return (96, 64) if name not in ("inception_v3", "legacy_xception") else (107, 99)


def _pair(name: str):
    kwargs = SMALL.get(name, {})
    torch.manual_seed(0)
    bb = explorer.load_backbone(name, pretrained=False, device="cpu", **kwargs)
    torch.manual_seed(0)
    oracle = timm.create_model(name, pretrained=False, **kwargs).eval()
    return bb, oracle


@pytest.mark.slow
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_stage_maps_rules_and_shapes_match_timm(name):
    bb, oracle = _pair(name)
    info = oracle.feature_info
    modules = [item["module"] for item in info]
    # transformers' TimmBackbone names; a module that feeds several stages (CoaT) names the later ones by place
    assert bb.stage_names == [
        m if modules.index(m) == i else f"{m}[{modules[:i].count(m)}]" for i, m in enumerate(modules)
    ]
    assert [s.module for s in bb.all_stages] == modules
    assert [s.channels for s in bb.all_stages] == [item["num_chs"] for item in info]
    assert [s.reduction for s in bb.all_stages] == [item["reduction"] for item in info]
    height, width = _input_size(name, oracle)
    x = torch.randn(1, 3, height, width)
    with torch.inference_mode():
        expected = oracle.forward_intermediates(x, indices=list(range(len(info))), intermediates_only=True)
    bb.out_indices = list(range(len(bb.stage_names)))
    maps = bb(x)
    table = {row["name"]: row["shape"] for row in bb.stage_table(input_size=(height, width))}
    for stage_name, want in zip(bb.stage_names, expected):
        got = maps[stage_name]
        assert tuple(got.shape) == tuple(want.shape), stage_name
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=f"{name} {stage_name}")
        assert table[stage_name] == tuple(want.shape[1:]), f"stage_table {stage_name}"
        assert maps.aligned[stage_name]
    # one stage alone, with the early stop, gives the same map
    middle = len(bb.stage_names) // 2
    bb.out_indices = [middle]
    torch.testing.assert_close(bb(x)[bb.stage_names[middle]], expected[middle], rtol=1e-4, atol=1e-4)
