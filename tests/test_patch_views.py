"""explorer.pca and explorer.similarity against their oracles: scikit-learn's PCA on the same locations, cosine
similarity computed location by location, and an image with a repeated patch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.filters import threshold_otsu
from sklearn.decomposition import PCA

import explorer
from explorer.errors import InvalidArgumentError, LayerNotFoundError
from explorer.hooks import FeatureMaps


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)  # the same random weights in every run and every test order
    return explorer.load_backbone("resnet18", pretrained=False, out_indices=[2], device="cpu")


@pytest.fixture(scope="module")
def pixels():
    torch.manual_seed(1)
    return torch.randn(3, 3, 96, 128)


@pytest.fixture(scope="module")
def captured(resnet, pixels):
    return resnet.capture(pixels, ["layer2"])


def _table(fmap: torch.Tensor) -> np.ndarray:
    """The locations as rows, image by image, row-major: written out by hand, not by permute/reshape."""
    batch, _, height, width = fmap.shape
    rows = [fmap[n, :, i, j].numpy() for n in range(batch) for i in range(height) for j in range(width)]
    return np.stack(rows).astype(np.float64)


def test_pca_matches_sklearn_on_the_flattened_locations(resnet, pixels, captured):
    pv = explorer.pca(resnet, pixels, stage="layer2", n_components=4)
    fmap = captured["layer2"]
    table = _table(fmap)
    oracle = PCA(n_components=4, svd_solver="full").fit(table)  # exact (its "auto" would be randomized here)
    projected = oracle.transform(table)
    batch, _, height, width = fmap.shape
    ours = pv.components.permute(0, 2, 3, 1).reshape(-1, 4).double().numpy()
    assert pv.components.shape == (batch, 4, height, width)
    # Eigenvalues are well conditioned; a direction is only as precise as its eigen-gap (Davis-Kahan), and
    # components 2-4 here are 0.004-0.008 of the variance apart, so float32 against float64 can turn them within
    # their span. The first is compared one by one; all four as the subspace they span and each location's
    # projection onto it. A wrong fit (uncentred, wrong axis, wrong order) is off by O(1) in both.
    basis = pv.basis.components.double().numpy()
    sign = np.sign(np.dot(oracle.components_[0], basis[0]))
    np.testing.assert_allclose(basis[0] * sign, oracle.components_[0], atol=1e-3)
    np.testing.assert_allclose(ours[:, 0] * sign, projected[:, 0], atol=5e-3 * np.abs(projected[:, 0]).max())
    span, oracle_span = basis.T @ basis, oracle.components_.T @ oracle.components_
    assert np.abs(span - oracle_span).max() < 2e-2
    reconstructed, oracle_reconstructed = ours @ basis, projected @ oracle.components_
    np.testing.assert_allclose(
        reconstructed, oracle_reconstructed, atol=2e-2 * np.abs(oracle_reconstructed).max()
    )
    # fitted in float32: eigenvalues to about 1e-4 of their size (measured up to 1.2e-4 under CI), so 1e-3
    np.testing.assert_allclose(pv.basis.explained_variance_ratio, oracle.explained_variance_ratio_, rtol=1e-3)
    np.testing.assert_allclose(pv.basis.mean, table.mean(0), atol=1e-5)
    assert pv.foreground is None and pv.stage == "layer2"


def _latent_maps(decay: float, seed: int) -> FeatureMaps:
    """Two images of a 768-channel 32x16 grid mixed from 64 latent factors whose scale falls by ``decay`` each
    (pretrained features fall fast; ``decay=1`` is a flat spectrum, as random weights give), plus noise."""
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn(1024, 64, generator=generator) * decay ** torch.arange(64.0) * 5
    rows = latent @ torch.randn(64, 768, generator=generator) + 0.3 * torch.randn(
        1024, 768, generator=generator
    )
    return FeatureMaps({"tokens": rows.relu().reshape(2, 32, 16, 768).permute(0, 3, 1, 2)})


@pytest.mark.parametrize("decay, covariance", [(0.85, False), (1.0, True)])
def test_pca_on_768_channels_matches_sklearn_by_either_solver(resnet, monkeypatch, decay, covariance):
    # A falling spectrum converges in the randomized solver (no covariance is formed); a flat one does not,
    # and the exact covariance answer replaces it. Either way the result is scikit-learn's.
    maps = _latent_maps(decay, seed=7)
    eigh = torch.linalg.eigh
    calls = []
    monkeypatch.setattr(torch.linalg, "eigh", lambda matrix: calls.append(matrix.shape[0]) or eigh(matrix))
    pv = explorer.pca(resnet, maps, n_components=3)
    assert (768 in calls) == covariance  # the (768, 768) covariance; the randomized solver's own is (13, 13)
    table = _table(maps["tokens"])
    oracle = PCA(n_components=3, svd_solver="full").fit(table)
    np.testing.assert_allclose(pv.basis.explained_variance_ratio, oracle.explained_variance_ratio_, rtol=1e-3)
    if not covariance:  # well separated (gaps of 15% and more): each direction one by one, signs included
        np.testing.assert_allclose(pv.basis.components.double(), oracle.components_, atol=1e-3)
        projected = oracle.transform(table)
        ours = pv.components.permute(0, 2, 3, 1).reshape(-1, 3).double().numpy()
        np.testing.assert_allclose(ours, projected, atol=1e-3 * np.abs(projected).max())
    again = explorer.pca(resnet, maps, n_components=3)  # the randomized start is seeded: the same every call
    assert torch.equal(again.basis.components, pv.basis.components)


def test_pca_from_captured_maps_needs_no_forward_pass_and_agrees(resnet, pixels, captured, monkeypatch):
    from_images = explorer.pca(resnet, pixels, stage="layer2")
    monkeypatch.setattr(resnet, "capture", lambda *a, **k: pytest.fail("a forward pass ran"))
    from_maps = explorer.pca(resnet, captured)
    torch.testing.assert_close(from_maps.components, from_images.components)
    assert np.array_equal(from_maps.rgb, from_images.rgb)


def test_colours_are_min_max_of_the_fit_and_reused_with_fit(resnet, captured):
    pv = explorer.pca(resnet, captured)
    comps = pv.components
    for k in range(3):  # the location scoring highest on component k is full intensity in colour k
        n, i, j = np.unravel_index(int(comps[:, k].argmax()), (comps.shape[0], *comps.shape[2:]))
        assert pv.rgb[n, i, j, k] == 255
        n, i, j = np.unravel_index(int(comps[:, k].argmin()), (comps.shape[0], *comps.shape[2:]))
        assert pv.rgb[n, i, j, k] == 0
    # a new image coloured with the fit: its projection uses the fit's mean and components, its colours the
    # fit's range (image 0 alone would have a smaller range, so refitting would change them)
    alone = FeatureMaps({"layer2": captured["layer2"][:1]})
    reused = explorer.pca(resnet, alone, fit=pv.basis)
    assert np.array_equal(reused.rgb, pv.rgb[:1])
    torch.testing.assert_close(reused.components, pv.components[:1])
    refitted = explorer.pca(resnet, alone)
    assert not np.array_equal(refitted.rgb, pv.rgb[:1])


def test_size_upsamples_the_colours_only(resnet, captured):
    pv = explorer.pca(resnet, captured, size=(48, 64))
    assert pv.rgb.shape == (3, 48, 64, 3) and pv.rgb.dtype == np.uint8
    assert pv.components.shape[-2:] == captured["layer2"].shape[-2:]
    same = explorer.pca(resnet, captured, size=captured["layer2"].shape[-2:])
    assert np.array_equal(same.rgb, explorer.pca(resnet, captured).rgb)


def _blob_maps(flip: bool = False) -> FeatureMaps:
    """Two 8x8 images: a centre blob of one feature on a background of another, plus noise."""
    generator = torch.Generator().manual_seed(3)
    fmap = 0.02 * torch.randn(2, 16, 8, 8, generator=generator)
    centre = torch.zeros(8, 8, dtype=torch.bool)
    centre[2:6, 3:7] = True
    fmap[:, 0] += torch.where(centre, 2.0, 0.0)
    fmap[:, 1] += torch.where(centre, 0.0, 1.0) + torch.linspace(0, 0.2, 8)  # background varies a little
    fmap[:, 2] += torch.where(centre, torch.linspace(-1, 1, 8)[:, None].expand(8, 8), 0.0)
    return FeatureMaps({"blob": -fmap if flip else fmap}), centre


@pytest.mark.parametrize("flip", [False, True])
def test_auto_foreground_is_otsu_with_the_border_as_background(resnet, flip):
    maps, centre = _blob_maps(flip)
    pv = explorer.pca(resnet, maps, foreground="auto")
    assert pv.foreground.shape == (2, 8, 8)
    assert torch.equal(pv.foreground, centre.expand(2, 8, 8))  # whichever sign the first component came with
    rows = torch.from_numpy(_table(maps["blob"])).float()
    first = PCA(1).fit(rows.numpy())
    score = first.transform(rows.numpy())[:, 0]
    score = score if score.reshape(2, 8, 8)[:, 0, 0].mean() < 0 else -score
    assert pv.basis.foreground.threshold == pytest.approx(threshold_otsu(score), abs=1e-4)
    # the second pass is fitted on the foreground only: its mean is the blob's
    np.testing.assert_allclose(pv.basis.mean, rows[centre.expand(2, 8, 8).flatten()].mean(0), atol=1e-5)
    assert (pv.rgb[~pv.foreground.numpy()] == 0).all()
    assert pv.rgb[pv.foreground.numpy()].max() == 255


def test_float_foreground_threshold_and_its_reuse(resnet):
    maps, centre = _blob_maps()
    everything = explorer.pca(resnet, maps, foreground=-1e9)
    assert everything.foreground.all()
    pv = explorer.pca(resnet, maps, foreground="auto")
    again = explorer.pca(resnet, FeatureMaps({"blob": maps["blob"][1:]}), fit=pv.basis)
    assert torch.equal(again.foreground, pv.foreground[1:])


def test_similarity_is_cosine_by_hand(resnet, pixels, captured):
    sim = explorer.similarity(resnet, pixels, stage="layer2", query=(1, 3, 5), size=(24, 32))
    fmap = captured["layer2"]
    q = fmap[1, :, 3, 5]
    batch, _, height, width = fmap.shape
    expected = torch.empty(batch, height, width)
    for n in range(batch):
        for i in range(height):
            for j in range(width):
                v = fmap[n, :, i, j]
                expected[n, i, j] = torch.dot(v, q) / (v.norm() * q.norm())
    torch.testing.assert_close(sim.maps, expected, atol=1e-5, rtol=1e-5)
    assert sim.maps[1, 3, 5] == pytest.approx(1.0, abs=1e-5)
    for n, (row, col) in enumerate(sim.best):
        others = expected[n].clone()
        if n == 1:
            others[3, 5] = -2  # the query itself is not its own image's match
        assert (row, col) == divmod(int(others.argmax()), width)
    assert sim.upsampled.shape == (3, 24, 32)
    same = explorer.similarity(resnet, captured, query=(1, 3, 5), size=(height, width))
    torch.testing.assert_close(same.upsampled, same.maps)


def test_any_layer_not_only_a_stage(resnet, pixels):
    # a layer inside a stage (list_layers), captured by name: its own grid and channels, cosine by hand
    layer = "layer1.0.conv1"
    fmap = resnet.capture(pixels, [layer])[layer]
    sim = explorer.similarity(resnet, pixels, stage=layer, query=(2, 4, 9))
    unit = F.normalize(fmap, dim=1)
    torch.testing.assert_close(
        sim.maps, torch.einsum("nchw,c->nhw", unit, unit[2, :, 4, 9]), atol=1e-5, rtol=0
    )
    assert sim.stage == layer and sim.maps.shape == (3, *fmap.shape[-2:])
    pv = explorer.pca(resnet, pixels, stage=layer, n_components=2)
    assert pv.basis.components.shape == (2, fmap.shape[1]) and pv.components.shape[-2:] == fmap.shape[-2:]


def test_two_identical_patches_match_each_other_best(resnet):
    torch.manual_seed(5)
    image = torch.randn(1, 3, 256, 256)
    image[..., 144:240, 144:240] = image[..., 16:112, 16:112]  # a 96-pixel block repeated elsewhere
    other = torch.randn(1, 3, 256, 256)
    other[..., 80:176, 32:128] = image[..., 16:112, 16:112]  # and in a second image
    pixels = torch.cat([image, other])
    # layer1 has stride 4: cell (16, 16) sees pixels around (64, 64), well inside the block
    sim = explorer.similarity(resnet, pixels, stage="layer1", query=(0, 16, 16))
    assert sim.best[0] == (16 + 32, 16 + 32)
    assert sim.best[1] == (16 + 16, 16 + 4)
    assert sim.maps[0, 48, 48] == pytest.approx(1.0, abs=1e-4)
    back = explorer.similarity(resnet, pixels, stage="layer1", query=(0, 48, 48))
    assert back.best[0] == (16, 16)


def test_bad_arguments_name_the_fix(resnet, captured):
    with pytest.raises(InvalidArgumentError, match="n_components"):
        explorer.pca(resnet, captured, n_components=0)
    with pytest.raises(InvalidArgumentError, match="n_components"):
        explorer.pca(resnet, captured, n_components=True)
    with pytest.raises(InvalidArgumentError, match="foreground"):
        explorer.pca(resnet, captured, foreground="yes")
    with pytest.raises(InvalidArgumentError, match="fit"):
        explorer.pca(resnet, captured, fit="basis")
    basis = explorer.pca(resnet, captured).basis
    with pytest.raises(InvalidArgumentError, match="channels"):
        explorer.pca(resnet, FeatureMaps({"x": torch.zeros(1, 7, 4, 4)}), fit=basis)
    with pytest.raises(InvalidArgumentError, match="foreground"):
        explorer.pca(resnet, captured, fit=basis, foreground="auto")
    with pytest.raises(InvalidArgumentError, match="size"):
        explorer.pca(resnet, captured, size=(0, 4))
    with pytest.raises(InvalidArgumentError, match="capture"):
        explorer.pca(resnet, captured, stage="layer3")
    with pytest.raises(LayerNotFoundError, match="list_layers"):
        explorer.pca(resnet, torch.zeros(1, 3, 64, 64), stage="layer9")
    with pytest.raises(InvalidArgumentError, match="fewer than two locations"):
        explorer.pca(resnet, FeatureMaps({"x": torch.zeros(2, 8, 1, 1)}))
    with pytest.raises(InvalidArgumentError, match="query"):
        explorer.similarity(resnet, captured, query=(0, 5))
    with pytest.raises(InvalidArgumentError, match=r"query row=12.*3x12x16"):
        explorer.similarity(resnet, captured, query=(0, 12, 0))
    with pytest.raises(InvalidArgumentError, match="query image"):
        explorer.similarity(resnet, captured, query=(-1, 0, 0))


def test_unaligned_maps_are_refused(resnet):
    maps = FeatureMaps({"attn": torch.zeros(4, 2, 5, 5)}, unaligned={"attn": "batch of 4 for 1 input image"})
    with pytest.raises(InvalidArgumentError, match="not a grid of locations"):
        explorer.similarity(resnet, maps, query=(0, 0, 0))


def test_upsampled_rgb_is_bilinear_of_the_grid_colours(resnet, captured):
    small = explorer.pca(resnet, captured)
    big = explorer.pca(resnet, captured, size=(24, 32))
    expected = F.interpolate(
        torch.from_numpy(small.rgb).permute(0, 3, 1, 2).float(), size=(24, 32), mode="bilinear"
    )
    assert np.abs(big.rgb.astype(float) - expected.permute(0, 2, 3, 1).numpy()).max() <= 1.0
