"""Concepts across a dataset: the dictionaries against known answers and scikit-learn, the reservoir, exemplars
against brute force, cache and resume, saving, Ray, the command line and bad input.

Models are random-init resnet18 at a 64x64 input (post-ReLU stages: non-negative) and convnext_atto (signed
stages); images are files the tests write (tests/test_scan.py's helpers).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from test_scan import small_backbone, write_images

import explorer
from explorer import concept_discovery
from explorer.backbones.timm import TimmPreprocess
from explorer.cli import main
from explorer.concept_set import concept_warnings
from explorer.dataset import local as scan_local
from explorer.dataset import scanner
from explorer.dataset.local import plan_shards, scan_shards
from explorer.dataset.reservoir import Reservoir, StageSample
from explorer.dataset.sources import open_source
from explorer.dictionary import Dictionary, fit_dictionary, nnls_codes

STAGE = "layer2"  # 128 channels, 8x8 at 64x64
OPTIONS = dict(k=3, seed=0, samples=300, batch_size=4, shard_size=5, num_workers=0, progress=False)


@pytest.fixture(scope="module")
def bb() -> explorer.Backbone:
    return small_backbone()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    write_images(root, 12)
    return root


@pytest.fixture(scope="module")
def con(bb, folder):
    return explorer.concepts(bb, folder, STAGE, 6, "semi-nmf", cache=None, **OPTIONS)


def _pixels(bb, folder):
    source = open_source(folder)
    return bb.pixel_values([source.read(i) for i in range(len(source))])


def _planted(signed: bool, count: int = 4000, channels: int = 24):
    generator = torch.Generator().manual_seed(1)
    directions = (
        torch.randn(3, channels, generator=generator)
        if signed
        else torch.rand(3, channels, generator=generator) ** 3
    )
    directions /= directions.norm(dim=1, keepdim=True)
    which = torch.randint(0, 3, (count,), generator=generator)
    scale = torch.rand(count, generator=generator) * 3 + 0.5
    noise = 0.01 * torch.rand(count, channels, generator=generator)
    return scale[:, None] * directions[which] + noise, directions


# -- the dictionaries ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["nmf", "semi-nmf", "topk-sae"])
def test_planted_directions_are_recovered(method):
    vectors, directions = _planted(signed=method != "nmf")
    found = fit_dictionary(vectors, 3, method, seed=0, active=1 if method == "topk-sae" else None)
    unit = found.basis / found.basis.norm(dim=1, keepdim=True)
    cosines = (unit @ directions.T).max(0).values
    assert cosines.min() > 0.95, cosines
    codes = found.codes(vectors)
    assert codes.min() >= 0
    error = (vectors - found.reconstruct(codes)).norm() / vectors.norm()
    assert error < 0.05


def test_same_seed_same_dictionary_and_other_seed_another():
    vectors, _ = _planted(signed=True)
    first, again = fit_dictionary(vectors, 4, "semi-nmf", 0), fit_dictionary(vectors, 4, "semi-nmf", 0)
    assert torch.equal(first.basis, again.basis) and first.digest == again.digest
    assert fit_dictionary(vectors, 4, "semi-nmf", 1).digest != first.digest


def test_semi_nmf_error_is_bounded_by_the_svd_optima():
    # non-negative codes need a direction and its opposite for a signed axis: 12 semi-NMF directions do at least
    # as well as the best 6 directions with signed codes (Eckart-Young), never better than the best 12
    generator = torch.Generator().manual_seed(3)
    vectors = torch.randn(3000, 16, generator=generator) @ torch.randn(16, 16, generator=generator)
    found = fit_dictionary(vectors, 12, "semi-nmf", 0)
    error = float((vectors - found.reconstruct(found.codes(vectors))).norm() / vectors.norm())
    values = torch.linalg.svdvals(vectors)
    assert (
        float(values[12:].norm() / values.norm()) <= error <= float(values[6:].norm() / values.norm()) * 1.02
    )


def test_nnls_codes_match_scipy_nnls_row_by_row():
    from scipy.optimize import nnls

    generator = torch.Generator().manual_seed(2)
    basis = torch.rand(5, 12, generator=generator)
    vectors = torch.randn(40, 12, generator=generator)
    codes = nnls_codes(vectors, basis, steps=2000)
    expected = np.stack([nnls(basis.double().numpy().T, v)[0] for v in vectors.double().numpy()])
    np.testing.assert_allclose(codes.numpy(), expected, atol=2e-4)
    # a row's codes do not depend on the other rows of its batch
    torch.testing.assert_close(nnls_codes(vectors[:7], basis)[3], nnls_codes(vectors[3:4], basis)[0])


# -- the reservoir -------------------------------------------------------------------------------------------
def test_reservoir_is_bounded_deterministic_and_the_bottom_keys():
    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(10, 3, 4, 5, generator=generator)
    maps[2, :, 1, 1] = math.nan  # never sampled
    whole = Reservoir(size=17, seed=5)
    whole.add("s", maps, torch.arange(10))
    pieces = Reservoir(size=17, seed=5)
    for chunk in ([7, 8, 9], [0, 1], [2, 3, 4, 5, 6]):  # other batches, in another order
        pieces.add("s", maps[chunk], torch.tensor(chunk))
    a, b = whole.sample("s"), pieces.sample("s")
    assert len(a.keys) == 17 and all(
        torch.equal(x, y) for x, y in zip(dataclasses.astuple(a), dataclasses.astuple(b))
    )
    # brute force: every finite location's key from the same per-image generator, the 17 smallest
    keys = np.concatenate([np.random.default_rng([5, i]).random(20) for i in range(10)])
    finite = torch.isfinite(maps).all(1).reshape(-1).numpy()
    order = [j for j in np.argsort(keys, kind="stable") if finite[j]][:17]
    assert a.images.tolist() == [j // 20 for j in order] and a.cells.tolist() == [j % 20 for j in order]
    expected = maps.permute(0, 2, 3, 1).reshape(-1, 3)[order]
    assert torch.equal(a.vectors, expected)
    assert whole.nbytes == 17 * (8 + 8 + 8 + 3 * 4)
    other = Reservoir(size=17, seed=6)
    other.add("s", maps, torch.arange(10))
    assert other.sample("s").images.tolist() != a.images.tolist()


def test_reservoir_memory_does_not_grow_with_the_dataset():
    reservoir = Reservoir(size=50, seed=0)
    sizes = []
    for start in range(0, 400, 8):
        reservoir.add("s", torch.rand(8, 4, 6, 6), torch.arange(start, start + 8))
        sizes.append(reservoir.nbytes)
    assert sizes[-1] == sizes[5] == 50 * (24 + 16)


# -- concepts end to end ---------------------------------------------------------------------------------------
def test_concepts_shapes_quality_and_encode(con, bb, folder):
    assert con.basis.shape == (6, 128) and len(con) == 6 and con.stage == STAGE
    maps = bb.capture(_pixels(bb, folder)[:2], [STAGE])
    codes = con.encode(maps)
    assert codes.shape == (2, 6, 8, 8) and codes.min() >= 0
    assert torch.equal(codes, con.encode(maps[STAGE]))
    assert con.info["sampled"] == 300 and con.info["reservoir_bytes"] == 300 * (24 + 128 * 4)
    assert 0 < con.quality["svd_error"] <= con.relative_error < 1 and 0 <= con.sparsity < 1
    assert con.shares.shape == (6,) and con.shares.sum() == pytest.approx(1.0)


def test_exemplars_equal_brute_force_over_encode(con, bb, folder):
    codes = con.encode(bb.capture(_pixels(bb, folder), [STAGE]))  # every image
    best, cells = codes.flatten(2).max(-1)  # (N, n_concepts): the first cell holding the maximum
    for concept in range(len(con)):
        ranked = sorted(range(len(best)), key=lambda i: (-float(best[i, concept]), i))[: OPTIONS["k"]]
        top = con.top(concept)
        assert [e.index for e in top] == ranked
        assert [e.cell for e in top] == [divmod(int(cells[i, concept]), 8) for i in ranked]
        np.testing.assert_allclose(
            [e.value for e in top], [float(best[i, concept]) for i in ranked], rtol=1e-5
        )


def test_exemplar_ties_go_by_image_order(bb, tmp_path):
    # one picture under three names (scan order: dup_a, img..., zz_dup): equal codes, so equal values everywhere
    paths = write_images(tmp_path, 5)
    picture = Image.open(paths[1]).convert("RGB")
    for name in ("dup_a.png", "zz_dup.png", "zz_dup2.png"):
        picture.save(tmp_path / name)
    found = explorer.concepts(bb, tmp_path, STAGE, 4, "semi-nmf", cache=None, **{**OPTIONS, "k": 8})
    codes = found.encode(bb.capture(_pixels(bb, tmp_path), [STAGE]))
    best = codes.flatten(2).max(-1).values
    ties = 0
    for concept in range(len(found)):
        ranked = sorted(range(len(best)), key=lambda i: (-float(best[i, concept]), i))  # full stable sort
        top = found.top(concept)
        assert [e.index for e in top] == ranked[:8]
        values = [e.value for e in top]
        ties += sum(a == b for a, b in zip(values, values[1:]))
    assert ties >= 2 * len(found)  # the copies are ranked side by side, by image order


def test_fewer_readable_images_than_k_is_refused(bb, tmp_path):
    write_images(tmp_path, 3)
    for i in range(3):
        (tmp_path / f"broken{i}.png").write_bytes(b"not an image")
    with pytest.raises(explorer.DatasetError, match=r"Only 3 of the 6 images could be read, fewer than k=4"):
        explorer.concepts(bb, tmp_path, STAGE, 2, "semi-nmf", cache=None, **{**OPTIONS, "k": 4})


def test_nmf_basis_and_codes_equal_scikit_learn_on_the_same_reservoir(bb, folder):
    from sklearn.decomposition import MiniBatchNMF

    result = explorer.concepts(bb, folder, STAGE, 5, "nmf", cache=None, **OPTIONS)
    reservoir = Reservoir(OPTIONS["samples"], OPTIONS["seed"])
    source = open_source(folder)
    for _ in scan_shards(bb, source, plan_shards(len(source), 5), [STAGE], 1, 4, project=reservoir):
        pass
    vectors = reservoir.sample(STAGE).vectors.numpy()
    oracle = MiniBatchNMF(5, init="nndsvda", batch_size=2048, max_iter=200, random_state=0).fit(vectors)
    np.testing.assert_array_equal(result.basis.numpy(), oracle.components_.astype(np.float32))
    fmap = bb.capture(_pixels(bb, folder)[:3], [STAGE])[STAGE]
    ours = result.encode(fmap).permute(0, 2, 3, 1).reshape(-1, 5).double().numpy()
    rows = fmap.permute(0, 2, 3, 1).reshape(-1, 128).double().numpy()
    theirs = oracle.transform(rows.astype(np.float32))
    basis = oracle.components_
    ours_error, theirs_error = (np.linalg.norm(rows - z @ basis) for z in (ours, theirs))
    assert ours_error <= theirs_error * 1.001  # both solve min ||A - Z D||, Z >= 0; ours at least as well
    assert np.linalg.norm(ours - theirs) / np.linalg.norm(theirs) < 0.05


def test_nmf_refuses_negative_features_and_semi_nmf_takes_them(folder):
    torch.manual_seed(0)
    signed = explorer.load_backbone(
        "convnext_atto", out_features=["stages.1"], pretrained=False, device="cpu"
    )
    signed.preprocess = TimmPreprocess({"input_size": (3, 64, 64), "crop_pct": 1.0})
    heard = []
    with pytest.raises(explorer.InvalidArgumentError, match=r'holds negative values .*method="semi-nmf"'):
        explorer.concepts(
            signed,
            folder,
            "stages.1",
            4,
            "nmf",
            cache=None,
            **{**OPTIONS, "progress": lambda *n: heard.append(n)},
        )
    assert heard == [(0, 24)]  # refused on the first batch of 4, not after reading all 12 images
    result = explorer.concepts(signed, folder, "stages.1", 4, "semi-nmf", cache=None, **OPTIONS)
    assert result.basis.min() < 0 and result.relative_error < 1


def test_a_concept_living_in_one_image_is_warned_about():
    # four images (of a larger dataset); direction 2 occurs in image 12 only, direction 1 nowhere
    vectors = torch.tensor([[1.0, 0, 0], [2, 0, 0], [1, 0, 0], [1, 0, 0], [0, 0, 5], [1, 0, 0]])
    images = torch.tensor([0, 5, 9, 12, 12, 0])
    sample = StageSample(
        torch.arange(6.0, dtype=torch.float64), images, torch.zeros(6, dtype=torch.int64), vectors
    )
    quality = concept_discovery._quality(
        Dictionary("semi-nmf", torch.eye(3)), sample, lambda i: f"img{i}.png"
    )
    warnings = concept_warnings(quality)
    assert quality["top_image"][2] == "img12.png" and quality["top_image_share"][2] == pytest.approx(1.0)
    assert quality["dead"] == [False, True, False]
    # each concept's share of the concepts' energy: codes equal the vectors here, so 8, 0 and 25 of 33
    assert quality["share"] == pytest.approx([8 / 33, 0.0, 25 / 33], abs=1e-6)
    assert len(warnings) == 2
    assert warnings[0].startswith("concept 1 never fires")
    assert warnings[1].startswith("concept 2: 100% of its sampled activation is in one image (img12.png)")
    assert quality["relative_error"] == pytest.approx(0.0, abs=1e-6)


def test_a_concepts_share_does_not_depend_on_how_its_direction_is_scaled():
    # concept 2's direction twice as long halves its codes; its energy ||z||^2 ||d||^2, and so its share, stay
    vectors = torch.tensor([[1.0, 0, 0], [2, 0, 0], [0, 0, 5]])
    sample = StageSample(
        torch.arange(3.0, dtype=torch.float64), torch.arange(3), torch.zeros(3, dtype=torch.int64), vectors
    )
    longer = Dictionary("semi-nmf", torch.diag(torch.tensor([1.0, 1.0, 2.0])))
    quality = concept_discovery._quality(longer, sample, str)
    assert quality["share"] == pytest.approx([5 / 30, 0.0, 25 / 30], abs=1e-6)


def test_cache_hit_and_resume(bb, folder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = explorer.concepts(bb, folder, STAGE, 6, "semi-nmf", cache=cache, **OPTIONS)
    assert not first.info["fit_cached"]

    def refuse(*args, **kwargs):
        raise AssertionError("refitted or rescanned")

    monkeypatch.setattr(concept_discovery, "fit_dictionary", refuse)
    monkeypatch.setattr(scanner, "scan_shards", refuse)
    monkeypatch.setattr(concept_discovery, "scan_shards", refuse)
    again = explorer.concepts(bb, folder, STAGE, 6, "semi-nmf", cache=cache, **OPTIONS)
    assert again.info["fit_cached"] and torch.equal(again.basis, first.basis)
    assert [again.top(i) for i in range(6)] == [first.top(i) for i in range(6)]
    monkeypatch.undo()

    # a lost shard of the exemplar pass is rescanned alone; the fit is read back
    scan_folder = cache / first.scan.key
    (scan_folder / "scan.json").unlink()
    (scan_folder / "shard-00001.json").unlink()
    seen = []
    real = scan_local.scan_shards

    def counting(bb, source, shards, *args, **kwargs):
        seen.extend(s.index for s in shards)
        return real(bb, source, shards, *args, **kwargs)

    monkeypatch.setattr(concept_discovery, "fit_dictionary", refuse)
    monkeypatch.setattr(scanner, "scan_shards", counting)
    resumed = explorer.concepts(bb, folder, STAGE, 6, "semi-nmf", cache=cache, **OPTIONS)
    assert seen == [1]
    assert [resumed.top(i) for i in range(6)] == [first.top(i) for i in range(6)]
    # another dictionary (another seed) is another pass-2 scan, never the cached one
    monkeypatch.undo()
    other = explorer.concepts(bb, folder, STAGE, 6, "semi-nmf", cache=cache, **{**OPTIONS, "seed": 1})
    assert other.scan.key != first.scan.key


def test_save_html_and_load_round_trip(con, bb, folder, tmp_path):
    index = con.save_html(tmp_path / "report")
    text = index.read_text()
    assert "relative reconstruction error" in text and text.count('class="channel"') == 6
    assert len(list((tmp_path / "report" / "concepts").glob("k*.png"))) == 6 * OPTIONS["k"]
    loaded = explorer.Concepts.load(tmp_path / "report", backbone=bb)
    assert torch.equal(loaded.basis, con.basis) and loaded.quality == json.loads(json.dumps(con.quality))
    assert [loaded.top(i) for i in range(6)] == [con.top(i) for i in range(6)]
    maps = bb.capture(_pixels(bb, folder)[:2], [STAGE])
    assert torch.equal(loaded.encode(maps), con.encode(maps))
    crops, again = con.crops(2), loaded.crops(2)
    assert [np.asarray(c).tolist() for c in crops] == [np.asarray(c).tolist() for c in again]
    assert crops[0].size == (
        con.top(2)[0].box[2] - con.top(2)[0].box[0],
        con.top(2)[0].box[3] - con.top(2)[0].box[1],
    )
    other = small_backbone(seed=1)
    with pytest.raises(explorer.InvalidArgumentError, match="fitted on other weights"):
        explorer.Concepts.load(tmp_path / "report", backbone=other)
    with pytest.raises(explorer.CacheError, match="No saved concepts"):
        explorer.Concepts.load(tmp_path / "nothing")


def test_crops_paint_the_concept_where_it_fires(con, bb, folder):
    source = open_source(folder)
    for concept in (0, 4):
        best = con.top(concept)[0]
        image = source.read(best.index)
        codes = con.encode(bb.capture(bb.pixel_values([image]), [STAGE]))[0, concept]
        low = float(con.scan.stats(STAGE).mean[concept])
        painted = explorer.overlay(
            explorer.model_view(image, bb.preprocess),
            codes,
            alpha=0.5,
            cmap="inferno",
            vrange=(low, best.value),
        )
        expected = np.asarray(Image.fromarray(painted).crop(best.box))
        np.testing.assert_allclose(
            np.asarray(con.crops(concept)[0]).astype(int), expected.astype(int), atol=1
        )


@pytest.mark.slow
def test_ray_equals_local(bb, folder, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        local = explorer.concepts(bb, folder, STAGE, 6, "semi-nmf", cache=None, backend="local", **OPTIONS)
        on_ray = explorer.concepts(bb, folder, STAGE, 6, "semi-nmf", cache=tmp_path, backend="ray", **OPTIONS)
    finally:
        ray.shutdown()
    assert torch.equal(local.basis, on_ray.basis)
    for concept in range(6):
        a, b = local.top(concept), on_ray.top(concept)
        assert [(e.index, e.cell, e.box) for e in a] == [(e.index, e.cell, e.box) for e in b]
        assert [e.value for e in a] == [e.value for e in b]


# -- the scan's projection hook ----------------------------------------------------------------------------------
def test_a_projection_changes_the_scan_key_and_needs_a_digest(bb, folder, tmp_path):
    plain = explorer.scan(
        bb, folder, out_features=[STAGE], k=2, cache=tmp_path, progress=False, num_workers=0
    )

    class Halve:
        digest = "halve"

        def __call__(self, maps, indices):
            return {name: fmap[:, ::2] for name, fmap in maps.items()}

    halved = explorer.scan(
        bb, folder, out_features=[STAGE], k=2, cache=tmp_path, progress=False, num_workers=0, project=Halve()
    )
    assert halved.key != plain.key and halved.channels(STAGE) == 64
    assert halved.top(STAGE, 3) == plain.top(STAGE, 6)
    with pytest.raises(explorer.InvalidArgumentError, match="digest"):
        explorer.scan(bb, folder, out_features=[STAGE], cache=None, project=lambda maps, indices: maps)


# -- bad input -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        (dict(method="pca"), explorer.InvalidArgumentError, "choose one of: nmf, semi-nmf, topk-sae"),
        (dict(n_concepts=200), explorer.InvalidArgumentError, "layer2 has 128 channels"),
        (dict(n_concepts=0), explorer.InvalidArgumentError, "n_concepts=0"),
        (dict(stage="layer9"), explorer.LayerNotFoundError, "the stages are: act1, layer1, layer2"),
        (dict(k=50), explorer.DatasetError, "fewer than k=50"),
        (dict(samples=3), explorer.InvalidArgumentError, "fewer than n_concepts=6"),
        (dict(backend="spark"), explorer.InvalidArgumentError, "backend='spark'"),
    ],
)
def test_bad_input_names_the_fix(bb, folder, arguments, error, match):
    options = {**OPTIONS, "stage": STAGE, "n_concepts": 6, "method": "semi-nmf", **arguments}
    with pytest.raises(error, match=match):
        explorer.concepts(bb, folder, cache=None, **options)


def test_bad_concept_or_maps(con):
    with pytest.raises(explorer.InvalidArgumentError, match="concept=6; pass a whole number from 0 to 5"):
        con.top(6)
    with pytest.raises(explorer.InvalidArgumentError, match=r"takes \(N, 128, h, w\) maps"):
        con.encode(torch.zeros(128, 8, 8))
    with pytest.raises(explorer.LayerNotFoundError, match="capture it"):
        con.encode({"layer1": torch.zeros(1, 64, 16, 16)})


def test_cli_writes_the_report_and_refuses_bad_input(folder, tmp_path, capsys):
    out = tmp_path / "report"
    arguments = ["concepts", "resnet18", str(folder), "--random", "--device", "cpu", "--stage", "layer3"]
    assert (
        main(
            [
                *arguments,
                "--n",  # the issue's spelling; --n-concepts below
                "4",
                "--method",
                "semi-nmf",
                "--k",
                "2",
                "--no-cache",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "index.html").exists() and "4 semi-nmf concepts" in capsys.readouterr().out
    assert main([*arguments, "--n-concepts", "999", "--no-cache", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("explorer: n_concepts=999") and error.count("\n") == 1


def test_a_missing_scikit_learn_is_named_before_any_image_is_read(bb, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn raises ImportError
    with pytest.raises(explorer.MissingDependencyError, match=r'pip install "explorer\[concepts\]"'):
        explorer.concepts(bb, "/nonexistent-folder", STAGE, 4, "semi-nmf", cache=None)
