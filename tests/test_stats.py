"""Per-channel statistics, histograms and comparisons on small hand-built maps with known values."""

from __future__ import annotations

import csv
import json
import logging
import math

import numpy as np
import pytest
import torch

import explorer
from explorer.histograms import histogram
from explorer.stats import channel_difference, channel_stats, stage_similarity

NAN, INF = float("nan"), float("inf")


@pytest.fixture
def known() -> torch.Tensor:
    """(1, 3, 2, 2): a half-zero channel, a dead channel, a signed channel."""
    return torch.tensor(
        [
            [
                [[0.0, 2.0], [0.0, 2.0]],  # mean 1, std 1, l2 sqrt(8), sparsity 0.5, positive 0.5
                [[0.0, 0.0], [0.0, 0.0]],  # dead
                [[-1.0, 3.0], [5.0, 1.0]],  # mean 2, std sqrt(5), positive 0.75
            ]
        ]
    )


def test_known_channels_have_known_statistics(known):
    stats = channel_stats(known)
    assert stats.shape == (1, 3, 2, 2)
    np.testing.assert_allclose(stats.mean, [1.0, 0.0, 2.0])
    np.testing.assert_allclose(stats.std, [1.0, 0.0, math.sqrt(5.0)], rtol=1e-6)
    np.testing.assert_allclose(stats.min, [0.0, 0.0, -1.0])
    np.testing.assert_allclose(stats.max, [2.0, 0.0, 5.0])
    np.testing.assert_allclose(stats.l2, [math.sqrt(8.0), 0.0, 6.0], rtol=1e-6)
    np.testing.assert_allclose(stats.sparsity, [0.5, 1.0, 0.0])
    np.testing.assert_allclose(stats.positive, [0.5, 0.0, 0.75])
    np.testing.assert_array_equal(stats.nonfinite, [0, 0, 0])


def test_three_dim_map_is_one_image(known):
    assert channel_stats(known[0]).rows() == channel_stats(known).rows()


def test_top_bottom_rank_and_values(known):
    stats = channel_stats(known)
    top = stats.top(2, by="mean")
    np.testing.assert_array_equal(top.channels, [2, 0])
    np.testing.assert_allclose(top.values, [2.0, 1.0])
    assert stats.top(by="sparsity").channels.tolist() == [1, 0, 2]
    assert stats.bottom(1, by="min").channels.tolist() == [2]
    channels, values = stats.top(1, by="std")  # a Ranking unpacks like a tuple
    assert channels.tolist() == [2] and values[0] == pytest.approx(math.sqrt(5.0))


def test_ties_keep_channel_order_and_nan_comes_last():
    fmap = torch.ones(1, 4, 1, 2)
    fmap[0, 2] = NAN
    stats = channel_stats(fmap)
    assert stats.top(by="mean").channels.tolist() == [0, 1, 3, 2]
    assert stats.bottom(by="mean").channels.tolist() == [0, 1, 3, 2]


def test_rows_are_plain_dicts(known):
    rows = channel_stats(known).rows()
    assert len(rows) == 3
    assert rows[2] == pytest.approx(
        {
            "channel": 2,
            "mean": 2.0,
            "std": math.sqrt(5.0),
            "min": -1.0,
            "max": 5.0,
            "l2": 6.0,
            "sparsity": 0.0,
            "positive": 0.75,
            "nonfinite": 0,
        }
    )
    assert type(rows[2]["mean"]) is float and type(rows[2]["channel"]) is int


def test_summary_counts_dead_and_constant(known):
    fmap = torch.cat([known, torch.full((1, 1, 2, 2), 7.0)], dim=1)  # a constant, not dead, channel
    summary = channel_stats(fmap).summary()
    assert summary["channels"] == 4 and summary["images"] == 1
    assert summary["dead"] == 1
    assert summary["constant"] == 2
    assert summary["nonfinite"] == 0 and summary["nonfinite_values"] == 0
    assert summary["sparsity"] == pytest.approx((0.5 + 1.0 + 0.0 + 0.0) / 4)
    assert channel_stats(fmap).dead_channels().tolist() == [1]
    assert channel_stats(fmap).constant_channels().tolist() == [1, 3]


def test_per_image_and_pooled_over_the_batch():
    fmap = torch.zeros(2, 2, 2, 2)
    fmap[0, 0] = 1.0
    fmap[1, 0] = 3.0
    fmap[1, 1] = torch.tensor([[0.0, 4.0], [0.0, 4.0]])
    stats = channel_stats(fmap)
    np.testing.assert_allclose(stats.per_image["mean"], [[1.0, 0.0], [3.0, 2.0]])
    np.testing.assert_allclose(stats.per_image["std"], [[0.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(stats.per_image["sparsity"], [[0.0, 1.0], [0.0, 0.5]])
    np.testing.assert_allclose(stats.mean, [2.0, 1.0])
    np.testing.assert_allclose(stats.std, [1.0, math.sqrt(3.0)], rtol=1e-6)  # population std of 8 values
    np.testing.assert_allclose(stats.l2, [math.sqrt(40.0), math.sqrt(32.0)], rtol=1e-6)
    np.testing.assert_allclose(stats.min, [1.0, 0.0])
    np.testing.assert_allclose(stats.sparsity, [0.0, 0.75])
    assert stats.top(1, by="mean", image=0).channels.tolist() == [0]
    assert stats.top(1, by="mean", image=1).channels.tolist() == [0]
    assert stats.bottom(1, by="sparsity", image=0).channels.tolist() == [0]
    assert stats.dead_channels(image=0).tolist() == [1] and stats.dead_channels().tolist() == []
    assert stats.summary(image=0)["dead"] == 1


def test_pooled_std_matches_numpy_on_random_batch():
    fmap = torch.randn(3, 5, 6, 7) * torch.arange(1.0, 6.0).view(1, 5, 1, 1) + 10.0
    stats = channel_stats(fmap)
    pooled = fmap.transpose(0, 1).reshape(5, -1).double().numpy()
    np.testing.assert_allclose(stats.std, pooled.std(1), rtol=1e-5)
    np.testing.assert_allclose(stats.mean, pooled.mean(1), rtol=1e-6)
    np.testing.assert_allclose(stats.per_image["max"], fmap.amax((2, 3)).numpy(), rtol=1e-6)


def test_nonfinite_values_are_reported_and_left_out(caplog):
    fmap = torch.tensor([[[[NAN, 1.0], [INF, 3.0]], [[NAN, NAN], [NAN, NAN]], [[1.0, 1.0], [-INF, 1.0]]]])
    with caplog.at_level(logging.WARNING, logger="explorer.stats"):
        stats = channel_stats(fmap)
    np.testing.assert_array_equal(stats.nonfinite, [2, 4, 1])
    np.testing.assert_allclose(stats.mean, [2.0, NAN, 1.0])
    np.testing.assert_allclose(stats.std, [1.0, NAN, 0.0])
    np.testing.assert_allclose(stats.min, [1.0, NAN, 1.0])
    np.testing.assert_allclose(stats.max, [3.0, NAN, 1.0])
    np.testing.assert_allclose(stats.sparsity, [0.0, NAN, 0.0])
    summary = stats.summary()
    assert summary["nonfinite"] == 3 and summary["nonfinite_values"] == 7
    assert summary["constant"] == 1  # channel 2's finite values are all 1
    assert stats.top(by="mean").channels.tolist() == [0, 2, 1]
    assert "7 NaN/inf values in 3 of 3 channels" in caplog.text


def test_half_precision_is_reduced_in_float32(known):
    half = channel_stats(known.half())
    np.testing.assert_allclose(half.std, channel_stats(known).std, rtol=1e-6)


def test_statistics_errors_name_the_fix(known):
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(B, C, H, W\)"):
        channel_stats(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="Closest names: mean"):
        channel_stats(known).top(2, by="maen")
    with pytest.raises(ValueError, match="1 image"):
        channel_stats(known).values("mean", image=3)
    with pytest.raises(ValueError, match="holds no values"):
        channel_stats(torch.zeros(1, 2, 0, 3))


def test_histogram_counts_on_known_values():
    hist = histogram(torch.tensor([0.0, 1.0, 2.0, 3.0, NAN, INF]), bins=3)
    np.testing.assert_allclose(hist.edges, [0.0, 1.0, 2.0, 3.0])
    assert hist.counts.tolist() == [1, 1, 2]
    assert hist.nonfinite == 2 and hist.outside == 0
    np.testing.assert_allclose(hist.centers, [0.5, 1.5, 2.5])


def test_histogram_range_and_constant_map():
    hist = histogram(torch.arange(10.0), bins=2, range=(0.0, 4.0))
    assert hist.counts.tolist() == [2, 3] and hist.outside == 5
    flat = histogram(torch.full((3, 3), 2.0), bins=2)
    np.testing.assert_allclose(flat.edges, [1.5, 2.0, 2.5])
    assert flat.counts.sum() == 9
    with pytest.raises(ValueError, match="positive number of bins"):
        histogram(torch.zeros(3), bins=0)


def test_channel_difference_known_values():
    a = torch.tensor([[[1.0, 2.0, 3.0, 4.0]], [[0.0, 0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 0.0]]])
    b = torch.tensor([[[1.0, 2.0, 3.0, 8.0]], [[0.0, 0.0, 0.0, 0.0]], [[1.0, 0.0, 0.0, 0.0]]])
    diff = channel_difference(a, b)
    np.testing.assert_allclose(diff.mean_abs, [1.0, 0.0, 0.25])
    np.testing.assert_allclose(diff.max_abs, [4.0, 0.0, 1.0])
    np.testing.assert_allclose(diff.rms, [2.0, 0.0, 0.5])
    np.testing.assert_allclose(diff.mean, [-1.0, 0.0, -0.25])
    np.testing.assert_allclose(diff.cosine, [46.0 / math.sqrt(30.0 * 78.0), 1.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(diff.relative, [4.0 / math.sqrt(30.0), 0.0, INF], rtol=1e-6)
    assert diff.top(1, by="mean_abs").channels.tolist() == [0]
    assert diff.rows()[1]["cosine"] == 1.0


def test_channel_difference_leaves_out_nonfinite_positions():
    a = torch.tensor([[[[1.0, NAN], [2.0, 2.0]]]])
    b = torch.tensor([[[[0.0, 5.0], [2.0, INF]]]])
    diff = channel_difference(a, b)
    assert diff.nonfinite.tolist() == [2]
    np.testing.assert_allclose(diff.mean_abs, [0.5])


def test_channel_difference_needs_one_shape():
    with pytest.raises(ValueError, match="compare channel_stats"):
        channel_difference(torch.zeros(2, 4, 4), torch.zeros(2, 3, 3))


def test_stage_similarity_known_values():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    y = torch.tensor([1.0, 3.0, 2.0, 4.0]).view(1, 1, 2, 2)
    similarity = stage_similarity(x, y)
    assert similarity["cosine"] == pytest.approx(29.0 / 30.0)
    assert similarity["cka"] == pytest.approx(0.64)  # one feature: squared correlation 0.8^2


def test_stage_similarity_is_invariant_to_channel_rotation_and_scale():
    a = torch.randn(2, 6, 5, 5)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6))
    b = 3.0 * torch.einsum("dc,bchw->bdhw", rotation, a)
    assert stage_similarity(a, a) == pytest.approx({"cosine": 1.0, "cka": 1.0, "cka_debiased": 1.0})
    rotated = stage_similarity(a, b)
    assert rotated["cka"] == pytest.approx(1.0, abs=1e-6)
    assert rotated["cka_debiased"] == pytest.approx(1.0, abs=1e-6)
    assert rotated["cosine"] < 0.9
    assert stage_similarity(a, -a)["cosine"] == pytest.approx(-1.0)
    unrelated = stage_similarity(a, torch.randn(2, 6, 5, 5))
    assert unrelated["cka"] < 0.5


def test_stage_similarity_more_channels_than_samples():
    a = torch.randn(1, 40, 2, 2)  # 4 samples, 40 features: the Gram form
    rotation, _ = torch.linalg.qr(torch.randn(40, 40))
    b = torch.einsum("dc,bchw->bdhw", rotation, a)
    assert stage_similarity(a, b)["cka"] == pytest.approx(1.0, abs=1e-6)


def test_stage_similarity_nonfinite_is_nan():
    a = torch.randn(1, 2, 3, 3)
    b = a.clone()
    b[0, 0, 0, 0] = NAN
    result = stage_similarity(a, b)
    assert all(math.isnan(value) for value in result.values())


def _reference_debiased_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Song et al.'s unbiased HSIC on the n x n linear Gram matrices of raw (n, C) features, written out."""

    def hsic(gram_x: np.ndarray, gram_y: np.ndarray) -> float:
        n = gram_x.shape[0]
        kx, ky = gram_x.copy(), gram_y.copy()
        np.fill_diagonal(kx, 0.0)
        np.fill_diagonal(ky, 0.0)
        ones = np.ones(n)
        return (
            np.trace(kx @ ky)
            + (ones @ kx @ ones) * (ones @ ky @ ones) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (ones @ kx @ ky @ ones)
        ) / (n * (n - 3))

    gx, gy = x @ x.T, y @ y.T
    return hsic(gx, gy) / math.sqrt(hsic(gx, gx) * hsic(gy, gy))


def _samples(fmap: torch.Tensor) -> np.ndarray:
    return fmap.double().transpose(0, 1).reshape(fmap.shape[1], -1).T.numpy()


@pytest.mark.parametrize(
    "shape",
    [(1, 3, 2, 2), (2, 5, 3, 3), (3, 8, 2, 1), (1, 40, 2, 3), (4, 7, 5, 4), (2, 64, 3, 3), (1, 2, 1, 5)],
)
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("extra_channels", [0, 3])
def test_debiased_cka_matches_the_gram_matrix_formula(shape, seed, extra_channels):
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(shape, generator=generator) + 2.0  # uncentred: the reference never centres
    mixing = torch.randn(shape[1] + extra_channels, shape[1], generator=generator)
    b = torch.einsum("dc,bchw->bdhw", mixing, a)
    b = b + 0.5 * torch.randn(b.shape, generator=generator)
    result = stage_similarity(a, b)
    expected = _reference_debiased_cka(_samples(a), _samples(b))
    assert result["cka_debiased"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert math.isnan(result["cosine"]) == bool(extra_channels)


def test_cka_compares_different_channel_counts_on_one_grid():
    a = torch.randn(2, 6, 4, 4)
    widened = torch.cat([a, torch.zeros(2, 3, 4, 4)], 1)  # the same features and three constant ones
    result = stage_similarity(a, widened)
    assert result["cka"] == pytest.approx(1.0) and result["cka_debiased"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="adaptive_avg_pool2d"):
        stage_similarity(a, torch.randn(2, 6, 2, 2))


def test_debiased_cka_removes_the_small_sample_bias():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(6, 320, 7, 7, generator=generator)  # 294 samples against 320 channels, as in blocks.6
    b = torch.randn(6, 320, 7, 7, generator=generator)
    result = stage_similarity(a, b)
    assert result["cka"] == pytest.approx(320 / (294 + 320), abs=0.02)  # the plain estimator's bias
    assert abs(result["cka_debiased"]) < 0.01
    assert stage_similarity(a, a)["cka_debiased"] == pytest.approx(1.0)


def test_debiased_cka_needs_four_samples():
    assert math.isnan(stage_similarity(torch.randn(1, 3, 1, 3), torch.randn(1, 3, 1, 3))["cka_debiased"])


def test_public_names_are_exported(known):
    assert explorer.channel_stats is channel_stats
    assert isinstance(explorer.channel_stats(known), explorer.ChannelStats)
    assert isinstance(explorer.histogram(known), explorer.Histogram)
    assert isinstance(explorer.channel_difference(known, known), explorer.ChannelDifference)


def test_stats_to_csv_and_json(tmp_path, known):
    fmap = known.clone()
    fmap[0, 2, 0, 0] = NAN
    stats = channel_stats(fmap)
    with (explorer.stats_to_csv(stats, tmp_path / "s.csv")).open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["channel"] for row in rows] == ["0", "1", "2"]
    assert float(rows[0]["mean"]) == 1.0 and rows[2]["nonfinite"] == "1"
    data = json.loads(explorer.stats_to_json(stats, tmp_path / "s.json").read_text())
    assert data["shape"] == [1, 3, 2, 2]
    assert data["summary"]["dead"] == 1 and data["summary"]["nonfinite"] == 1
    assert data["rows"][0]["std"] == 1.0
    assert data["rows"][2]["mean"] == 3.0
    one = channel_stats(torch.full((1, 1, 1, 1), NAN))
    assert json.loads(explorer.stats_to_json(one, tmp_path / "n.json").read_text())["rows"][0]["mean"] is None
