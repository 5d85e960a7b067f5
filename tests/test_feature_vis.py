"""Feature visualisation (explorer.visualize): the parameterisations against their references (horama's MaCo
preconditioner and Lucid's colour matrix), the optimisation on the pretrained default, and the contract (seeded,
batched, the model left as found, bad input refused)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import explorer
from explorer import feature_images as fi
from explorer.backbones.timm import TimmPreprocess

TINY = "test_resnet"  # timm's own tiny test network: 0.5 M parameters


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return explorer.load_backbone(TINY, pretrained=False, device="cpu")


@pytest.fixture(scope="module")
def default():
    return explorer.load_backbone("default", device="cpu")


def _pixels(image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


# ----------------------------------------------------------------------------------------------- parameterisations


def test_fft_parameterisation_inverts_the_real_fft():
    """An image's spectrum, divided by Lucid's 1/f scale, gives back the image exactly."""
    size = 32
    image = torch.randn(2, 3, size, size, dtype=torch.float64)
    scale = fi.fft_scale(size, size).double()
    spectrum = torch.view_as_real(torch.fft.rfft2(image * 4.0, norm="ortho") / scale)
    torch.testing.assert_close(fi.fft_image(spectrum, scale, size), image)


def _lucid_chain(images, preset, generator):
    """Lucid's transforms one after another (pad with grey, crop, rotate and scale, crop, resize): the oracle of the
    one-resampling version."""
    import torch.nn.functional as F

    size, pad = images.shape[-1], preset["pad"]
    out = F.pad(images, [pad] * 4, value=0.5)
    for shift in (preset["jitter"], None, preset["late"]):
        if shift is None:
            scale = preset["scales"][fi._draw(generator, len(preset["scales"]))]
            angles = list(range(-preset["angles"], preset["angles"] + 1)) + 5 * [0]
            angle = np.deg2rad(angles[fi._draw(generator, len(angles))])
            cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
            theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=out.dtype)
            grid = F.affine_grid(theta.expand(out.shape[0], 2, 3), list(out.shape), align_corners=False)
            out = F.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=False)
            continue
        dy, dx = fi._draw(generator, shift), fi._draw(generator, shift)
        out = out[..., dy : out.shape[-2] - shift + 1 + dy, dx : out.shape[-1] - shift + 1 + dx]
    return F.interpolate(out, size=(size, size), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("preset", ["lucid", "strong"])
def test_the_transforms_are_lucids_chain_in_one_resampling(preset):
    """One grid_sample gives what pad, jitter, scale-and-rotate, jitter and resize give one after another (up to
    the chain's extra blur: a smooth image that fades to grey at its edges), with the same draws."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    smooth = F.interpolate(torch.rand(2, 3, 6, 6), size=(80, 80), mode="bicubic", align_corners=False)
    window = torch.hann_window(80, periodic=False)
    images = 0.5 + (smooth.clamp(0, 1) - 0.5) * (window[:, None] * window[None, :])
    for seed in range(4):
        fused = fi.random_transform(images, fi.TRANSFORMS[preset], torch.Generator().manual_seed(seed))
        chain = _lucid_chain(images, fi.TRANSFORMS[preset], torch.Generator().manual_seed(seed))
        assert fused.shape == images.shape
        assert (fused - chain).abs().max() < 0.015, seed
    assert (fused - images).abs().max() > 0.05  # it does move the image


def test_fft_scale_is_lucids_one_over_f():
    scale = fi.fft_scale(8, 8)
    assert scale.shape == (8, 5)
    assert scale[0, 0] == pytest.approx(8.0)  # the DC bin is clamped at 1 / max(h, w)
    assert scale[0, 1] == pytest.approx(8.0)  # f = 1/8
    assert scale[1, 1] == pytest.approx(1 / np.sqrt(2 / 64))
    assert scale[4, 4] == pytest.approx(1 / np.sqrt(0.5))  # the highest frequency


def test_colours_match_horamas_lucid_matrix():
    from horama.common import get_color_correlation_svd_sqrt, recorrelate_colors

    torch.testing.assert_close(
        fi.COLOR_NORMALIZED.T, get_color_correlation_svd_sqrt("cpu"), atol=1e-4, rtol=0
    )
    image = torch.randn(1, 3, 6, 6)
    expected = torch.sigmoid(recorrelate_colors(image[0], "cpu"))
    torch.testing.assert_close(fi.to_rgb(image)[0], expected, atol=2e-5, rtol=0)


def test_maco_image_matches_horamas_preconditioner():
    from horama.maco_fv import maco_preconditioner

    generator = torch.Generator().manual_seed(1)
    phase = torch.randn(1, 3, 16, 9, generator=generator)
    magnitude = torch.rand(3, 16, 9, generator=generator) + 0.1
    ours = fi.to_rgb(fi.maco_image(phase, magnitude))[0]
    theirs = maco_preconditioner(magnitude, phase[0], (0.0, 1.0), "cpu")
    torch.testing.assert_close(ours, theirs, atol=2e-4, rtol=0)


def test_maco_keeps_the_given_magnitude_exactly():
    """The image's spectrum has the given magnitude (up to the standardisation's one scale) at every bin that a
    real image can carry freely (not the DC or Nyquist columns)."""
    generator = torch.Generator().manual_seed(2)
    magnitude = torch.rand(3, 32, 17, generator=generator) + 0.5
    phase = torch.randn(2, 3, 32, 17, generator=generator)
    spectrum = torch.fft.rfft2(fi.maco_image(phase, magnitude)).abs()[..., 1:16]
    ratio = spectrum / magnitude[..., 1:16]
    for b in range(2):
        torch.testing.assert_close(
            ratio[b], torch.full_like(ratio[b], float(ratio[b].mean())), rtol=1e-4, atol=0
        )


def test_magnitude_spectrum_of_the_users_images(tmp_path):
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::8] = 255  # vertical stripes: energy at horizontal frequency 8/64 only
    magnitude = explorer.magnitude_spectrum([stripes], size=64)
    assert magnitude.shape == (3, 64, 33)
    assert magnitude[:, 0, 8].sum() > 100 * magnitude[:, 5, 3].sum()
    flat = explorer.magnitude_spectrum([np.full((64, 64, 3), 90, np.uint8)], size=64)
    assert float(flat.abs().max()) < 1e-3  # no structure, no spectrum


# ----------------------------------------------------------------------------------------------- the optimisation


def _seen_as_optimised(bb, images, size):
    """Images as visualize() feeds its own: a size x size square, then the backbone's per-pixel steps."""
    squares = [
        np.asarray(ImageOps.fit(image.convert("RGB"), (size, size)), dtype=np.float32) for image in images
    ]
    return bb.preprocess.normalize(torch.from_numpy(np.stack(squares)).permute(0, 3, 1, 2) / 255)


@pytest.mark.slow
def test_the_optimised_image_drives_its_channel_harder_than_every_photo(default):
    """On the pretrained default, at two stages: the final activation is several times that of any sample photo
    (seen at the same size) and of the starting noise."""
    size = 96
    photos = list(explorer.sample_images().values())
    pixels = _seen_as_optimised(default, photos, size)
    for stage, channels in (("blocks.2", [5, 11]), ("blocks.4", [3, 17])):
        results = explorer.visualize(default, stage=stage, channel=channels, steps=32, size=size, seed=0)
        photo_means = default.capture(pixels, layers=[stage])[stage].mean((2, 3))
        for channel, result in zip(channels, results):
            best_photo = float(photo_means[:, channel].max())
            assert result.activation > 2 * max(best_photo, 0.1), (
                stage,
                channel,
                result.activation,
                best_photo,
            )
            assert result.activation > result.history[0] + 1.0
            assert np.mean(result.history[-5:]) > np.mean(result.history[:5])
            assert result.image.size == (size, size) and result.weights == "package"


def test_activation_is_the_objective_on_the_returned_image(tiny):
    """activation is the channel's mean on the PNG's own pixels, normalised as the model expects."""
    result = explorer.visualize(tiny, stage="layer2", channel=7, steps=3, size=48)
    pixels = _seen_as_optimised(tiny, [result.image], 48)
    expected = float(tiny.capture(pixels, layers=["layer2"])["layer2"][0, 7].mean())
    assert result.activation == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert len(result.history) == 3 and result.objective == "channel 7" and result.stage == "layer2"


@pytest.mark.parametrize("method", ["fft", "maco"])
def test_same_seed_same_image_other_seed_other_image(tiny, method):
    def run(seed: int):
        return explorer.visualize(tiny, stage="layer1", channel=2, steps=4, size=32, seed=seed, method=method)

    first, again, other = run(0), run(0), run(1)
    assert np.array_equal(_pixels(first.image), _pixels(again.image)) and first.history == again.history
    assert np.abs(_pixels(first.image) - _pixels(other.image)).max() > 20


@pytest.mark.parametrize("method", ["fft", "maco"])
def test_a_batch_equals_one_run_per_channel(tiny, method):
    """Same seed: each image of a batch is the image of its own run, exactly on a CPU (one image per pass, and the
    shared parameterisation and transforms keep every image's layout and arithmetic as in a run of one)."""
    assert tiny.device.type == "cpu"
    batch = explorer.visualize(tiny, stage="layer2", channel=[1, 4, 9], steps=6, size=32, method=method)
    for channel, result in zip([1, 4, 9], batch):
        alone = explorer.visualize(tiny, stage="layer2", channel=channel, steps=6, size=32, method=method)
        assert np.array_equal(_pixels(result.image), _pixels(alone.image))
        assert result.activation == alone.activation and result.history == alone.history
    assert np.abs(_pixels(batch[0].image) - _pixels(batch[1].image)).max() > 20  # the channels differ


def test_a_one_hot_direction_is_its_channel(tiny):
    """A concept direction plugs in as a (C,) vector; a unit vector on channel 4 is channel 4."""
    direction = torch.zeros(48)
    direction[4] = 1.0
    by_direction = explorer.visualize(tiny, stage="layer2", direction=direction, steps=4, size=32)
    by_channel = explorer.visualize(tiny, stage="layer2", channel=4, steps=4, size=32)
    assert np.array_equal(_pixels(by_direction.image), _pixels(by_channel.image))
    assert by_direction.objective == "direction 0"
    two = explorer.visualize(tiny, stage="layer2", direction=np.eye(48)[[4, 6]], steps=4, size=32)
    assert [r.objective for r in two] == ["direction 0", "direction 1"]
    assert np.abs(_pixels(two[0].image) - _pixels(by_channel.image)).max() <= 2


def test_a_class_logit_rises(default):
    result = explorer.visualize(default, target="tabby cat", steps=12, size=64)
    assert result.objective == "class 281 (tabby, tabby cat)" and result.stage == "head"
    assert result.activation > result.history[0] + 1.0


def test_any_layer_by_its_dotted_name(tiny):
    assert not fi.is_vit(tiny.model)
    layer = "layer2.0.conv1"
    assert layer in explorer.list_layers(tiny)
    result = explorer.visualize(tiny, stage=layer, channel=0, steps=8, size=32)
    assert result.stage == layer and result.history[-1] > result.history[0]


def test_vit_stage_and_mlp_hidden_unit():
    torch.manual_seed(0)
    bb = explorer.load_backbone("test_vit", pretrained=False, device="cpu")
    assert fi.is_vit(bb.model)  # transforms="auto" gives ViTs the stronger set
    for stage in ("blocks.1", "blocks.1.mlp.fc1"):
        start = explorer.visualize(bb, stage=stage, channel=3, steps=1, size=160, transforms="lucid")
        result = explorer.visualize(bb, stage=stage, channel=3, steps=32, size=160, transforms="lucid")
        assert result.activation > start.activation + 0.03, stage


def _dead_relu_backbone() -> explorer.Backbone:
    """A convolution whose bias kills every unit on a grey image, then a ReLU: a grey start stays grey
    unless the gradient is redirected."""
    from torch import nn

    conv = nn.Conv2d(3, 4, 3, padding=1)
    nn.init.constant_(conv.weight, 0.1)
    nn.init.constant_(conv.bias, -2.0)  # grey gives about -1.8; bright pixels reach +4
    model = nn.Sequential(conv, nn.ReLU(inplace=True)).eval()
    stage = explorer.Stage("relu", 0, 4, 1, "1")
    return explorer.Backbone(model, [stage], spec="dead", weights="random", preprocess=TimmPreprocess({}))


def test_redirected_relu_gets_a_dead_layer_off_grey():
    bb = _dead_relu_backbone()
    stuck = explorer.visualize(bb, stage="relu", channel=0, steps=30, size=32, redirect_relu=False)
    assert max(stuck.history) == 0.0 and stuck.activation == 0.0
    freed = explorer.visualize(bb, stage="relu", channel=0, steps=30, size=32)
    assert freed.activation > 0.0 and freed.history[-1] > 0.0
    assert np.asarray(stuck.image).std() < 2 < 10 < np.asarray(freed.image).std()  # grey, against a picture
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in bb.model.modules())
    assert bb.model[1].inplace and "forward" not in vars(bb.model[1])  # its own forward again after


def test_the_model_is_left_as_found(tiny):
    model = tiny.model
    frozen = next(model.parameters())  # a frozen parameter must stay frozen, the others trainable
    frozen.requires_grad_(False)
    before = {name: p.requires_grad for name, p in model.named_parameters()}
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    try:
        explorer.visualize(tiny, stage="layer3", channel=[0, 1], steps=3, size=32)
        assert {name: p.requires_grad for name, p in model.named_parameters()} == before
        assert all(p.grad is None for p in model.parameters())
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
        assert not any(m.training for m in model.modules())
        assert all(torch.equal(p, weights[name]) for name, p in model.named_parameters())
        # even when the objective cannot be read
        with pytest.raises(explorer.ExplorerError):
            explorer.visualize(tiny, stage="layer3", channel=10_000, steps=3, size=32)
        assert {name: p.requires_grad for name, p in model.named_parameters()} == before
    finally:
        frozen.requires_grad_(True)


def test_progress_true_draws_a_progress_bar(tiny, capsys):
    """progress=True: tqdm's bar (a widget in a notebook, text here) counts the steps to the end."""
    explorer.visualize(tiny, stage="layer1", channel=0, steps=5, size=32, progress=True)
    err = capsys.readouterr().err
    assert "visualize" in err and "5/5" in err
    explorer.visualize(tiny, stage="layer1", channel=0, steps=5, size=32)
    assert "visualize" not in capsys.readouterr().err  # off by default


def test_a_concept_from_concepts_is_an_objective(tmp_path):
    """The basis rows of concepts learnt by explorer.concepts are directions visualize() optimises in one batch:
    the projection rises, and activation is the image's mean projection onto its own concept."""
    from test_scan import write_images

    folder = tmp_path / "images"
    write_images(folder, 6)
    torch.manual_seed(0)
    bb = explorer.load_backbone(TINY, pretrained=False, device="cpu")
    con = explorer.concepts(
        bb,
        folder,
        "layer2",
        3,
        "semi-nmf",
        k=2,
        seed=0,
        samples=200,
        batch_size=3,
        shard_size=3,
        num_workers=0,
        progress=False,
        cache=None,
    )
    results = explorer.visualize(bb, stage="layer2", direction=con.basis[:2], steps=16, size=48)
    assert [r.objective for r in results] == ["direction 0", "direction 1"]
    for i, result in enumerate(results):
        assert result.activation > result.history[0]
        pixels = _seen_as_optimised(bb, [result.image], 48)
        fmap = bb.capture(pixels, layers=["layer2"])["layer2"][0]
        projections = torch.einsum("chw,kc->k", fmap, con.basis[:2].float()) / fmap[0].numel()
        assert float(projections[i]) == pytest.approx(result.activation, rel=1e-3, abs=1e-4)


def test_previews_refine_and_the_last_is_not_the_result(tiny):
    """preview gets every Nth step's images (what the panel shows live); they change as the image refines."""
    seen: list[tuple[int, list]] = []
    result = explorer.visualize(
        tiny,
        stage="layer2",
        channel=[1, 4],
        steps=9,
        size=32,
        preview=lambda d, ims: seen.append((d, ims)),
        preview_every=3,
    )
    assert [done for done, _ in seen] == [3, 6]  # never after the last step: the result is the last picture
    assert all(len(images) == 2 and images[0].size == (32, 32) for _, images in seen)
    assert np.abs(_pixels(seen[0][1][0]) - _pixels(seen[1][1][0])).max() > 0
    assert np.abs(_pixels(seen[1][1][0]) - _pixels(result[0].image)).max() > 0


def test_a_preview_that_raises_stops_it_and_leaves_the_model_as_found(tiny):
    """The panel cancels by raising from preview: the optimisation stops there, hooks and flags restored."""
    model = tiny.model
    before = {name: p.requires_grad for name, p in model.named_parameters()}
    calls = []

    class Cancelled(Exception):
        pass

    def cancel(done, _images):
        calls.append(done)
        raise Cancelled

    with pytest.raises(Cancelled):
        explorer.visualize(
            tiny, stage="layer3", channel=0, steps=50, size=32, preview=cancel, preview_every=2
        )
    assert calls == [2]
    assert {name: p.requires_grad for name, p in model.named_parameters()} == before
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


# ----------------------------------------------------------------------------------------------- bad input


def test_train_mode_is_refused_with_the_fix(tiny):
    tiny.model.train()
    try:
        with pytest.raises(explorer.FeatureVisError, match=r"bb\.model\.eval\(\)"):
            explorer.visualize(tiny, stage="layer1", channel=0, steps=1, size=32)
    finally:
        tiny.model.eval()


def test_a_class_target_needs_a_head():
    bb = explorer.load_backbone("test_resnet", pretrained=False, device="cpu", num_classes=0)
    with pytest.raises(explorer.FeatureVisError, match="no classifier head.*channel="):
        explorer.visualize(bb, target=3, steps=1, size=32)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"channel": 96}, explorer.InvalidArgumentError, "layer2 has 48 channels"),
        ({"channel": -1}, explorer.InvalidArgumentError, "channel=-1"),
        ({"channel": [1, "a"]}, explorer.InvalidArgumentError, "whole number"),
        ({"channel": []}, explorer.InvalidArgumentError, "empty"),
        ({"channel": 1.5}, explorer.InvalidArgumentError, "whole number"),
        ({}, explorer.InvalidArgumentError, "exactly one objective"),
        ({"channel": 1, "target": 3}, explorer.InvalidArgumentError, "exactly one objective"),
        ({"direction": torch.ones(7)}, explorer.InvalidArgumentError, r"\(48,\) vector"),
        ({"direction": torch.zeros(48)}, explorer.InvalidArgumentError, "all-zero"),
        ({"direction": "up"}, explorer.InvalidArgumentError, "direction"),
        ({"channel": 1, "steps": 0}, explorer.InvalidArgumentError, "steps=0"),
        ({"channel": 1, "size": 8}, explorer.InvalidArgumentError, "size=8"),
        ({"channel": 1, "seed": -3}, explorer.InvalidArgumentError, "seed=-3"),
        ({"channel": 1, "lr": 0}, explorer.InvalidArgumentError, "lr=0"),
        ({"channel": 1, "method": "deepdream"}, explorer.InvalidArgumentError, "fft, maco"),
        ({"channel": 1, "transforms": "none"}, explorer.InvalidArgumentError, "lucid, strong"),
        ({"channel": 1, "spectrum": torch.ones(3, 32, 17)}, explorer.InvalidArgumentError, "maco"),
        (
            {"channel": 1, "method": "maco", "spectrum": torch.ones(3, 8, 5)},
            explorer.InvalidArgumentError,
            r"\(3, 32, 17\)",
        ),
        ({"channel": 1, "target": None, "stage": "layer9"}, explorer.LayerNotFoundError, "layer1"),
        ({"target": 3, "stage": "layer2"}, explorer.InvalidArgumentError, "Drop stage="),
        ({"target": 5000}, explorer.InvalidArgumentError, "target=5000"),
        ({"target": "no such animal"}, explorer.ExplorerError, "No class named"),
    ],
)
def test_bad_input_names_the_fix(tiny, kwargs, error, match):
    headless = "target" in kwargs and kwargs.get("channel") is None  # a class target reads no stage
    kwargs = {"steps": 1, "size": 32} | ({} if headless else {"stage": "layer2"}) | kwargs
    with pytest.raises(error, match=match):
        explorer.visualize(tiny, **kwargs)


def test_not_a_backbone():
    with pytest.raises(explorer.InvalidArgumentError, match="load_backbone"):
        explorer.visualize("default", channel=1)


# ----------------------------------------------------------------------------------------------- the command


def test_cli_writes_one_png_per_channel(tmp_path, capsys):
    from explorer.cli import main

    out = tmp_path / "vis"
    argv = ["visualize", TINY, "--random", "--device", "cpu", "--stage", "layer2", "--channel", "3,5"]
    assert main([*argv, "--steps", "3", "--size", "32", "--out", str(out)]) == 0
    written = sorted(path.name for path in out.iterdir())
    assert written == ["layer2_channel3_fft.png", "layer2_channel5_fft.png"]
    image = np.asarray(Image.open(out / written[0]))
    assert image.shape == (32, 32, 3) and image.std() > 0  # 3 steps from grey noise: faint, not blank
    printed = capsys.readouterr().out
    assert "layer2 channel 3, activation" in printed and "random weights" in printed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--channel", "3,x"], "--channel 3,x: pass channel indices"),
        (["--channel", "999"], "layer2 has 48 channels"),
        (["--channel", "1", "--method", "dream"], "method='dream'"),
        (["--channel", "1", "--steps", "0"], "steps=0"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, extra, message):
    from explorer.cli import main

    argv = ["visualize", TINY, "--random", "--device", "cpu", "--stage", "layer2", "--out", str(tmp_path)]
    assert main([*argv, *extra, "--size", "32"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("explorer: ") and message in err and err.count("\n") == 1
