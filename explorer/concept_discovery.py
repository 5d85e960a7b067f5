""":func:`concepts`: the directions a stage uses across a dataset, each with its exemplars, like a channel.

Channels are often polysemantic; a dictionary of directions over the stage's feature vectors (NMF as in ACE and
CRAFT, Semi-NMF for signed features, a TopK sparse autoencoder) is what the field inspects instead. Two passes,
both on the scan's machinery (:mod:`explorer.scan`):

1. a pass over every image samples the stage's map locations into a bounded, seeded reservoir
   (:class:`explorer.dataset.reservoir.Reservoir`: memory independent of the dataset's size), and a dictionary is
   fitted on the sample (:func:`explorer.dictionary.fit_dictionary`); the fit is cached under the key of
   everything it depends on;
2. the scan itself runs over the projected stage (a :data:`~explorer.dataset.local.Projection` turning each batch's
   map into concept codes, ``(B, n_concepts, h, w)``), so exemplars, statistics, receptive-field crops, the
   cache (keyed on the dictionary's content hash), resume and the Ray backend are the scan's.

Negative features and NMF: NMF factorises non-negative data only. A stage holding negative values (most block
outputs: linear bottlenecks, residual streams, ViT tokens) is refused with ``method="nmf"`` (an
:class:`~explorer.InvalidArgumentError` naming ``"semi-nmf"``) rather than clamped: clamping would fit and report
on a different signal from the one ``encode`` is later given, and the quality figures would hide it.

Quality figures, measured on the sample: the relative reconstruction error ``||A - Z D|| / ||A||`` (beside
the least any ``n_concepts`` directions with signed codes could reach: the truncated SVD's, Eckart-Young), the
sparsity of the codes (share of zero codes, mean active concepts per location), each concept's share of the
concepts' energy (``||z_i||^2 ||d_i||^2`` over their sum) and the share of its code mass held by its strongest
image; a concept whose mass is mostly one image's (:data:`ONE_IMAGE_SHARE`), or that never fires, is listed in
:attr:`Concepts.warnings` (and logged).

Example::

    >>> con = explorer.concepts("default", explorer.sample_dataset(16), stage="blocks.4", n_concepts=8,
    ...                         method="semi-nmf", k=4, cache=None, progress=False)
    >>> con.basis.shape, round(con.relative_error, 2), round(con.quality["svd_error"], 2)
    (torch.Size([8, 112]), 0.82, 0.82)
    >>> ex = con.top(3)[0]
    >>> ex.source, ex.index, round(ex.value, 2), ex.cell, ex.box
    ('.../00008_coins.jpg', 8, 43.47, (5, 1), (0, 21, 91, 155))
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ._args import text, whole
from .backbones import Backbone, load_backbone
from .concept_set import ONE_IMAGE_SHARE, ConceptCodes, Concepts
from .dataset.local import plan_shards, scan_shards
from .dataset.reservoir import Reservoir, StageSample
from .dataset.scanner import check_options, progress_bar, scan
from .dataset.sources import SourceT, open_source
from .dataset.store import DEFAULT_CACHE, cache_key, weights_digest
from .dictionary import Dictionary, fit_dictionary, require
from .errors import CacheError, DatasetError, InvalidArgumentError, LayerNotFoundError
from .files import make_folder, write_atomic

__all__ = ["DEFAULT_SAMPLES", "ONE_IMAGE_SHARE", "Concepts", "concepts"]

_log = logging.getLogger(__name__)

DEFAULT_SAMPLES = 50_000
"""Map locations sampled per fit (at 112 channels: about 24 MB)."""

FIT_FORMAT = 1
"""Bumped whenever a cached fit changes meaning; part of its key."""


def _quality(dictionary: Dictionary, sample: StageSample, names: Callable[[int], str | int]) -> dict:
    """The quality figures of the module docs, JSON-able."""
    vectors = sample.vectors
    codes = dictionary.codes(vectors)
    error = float((vectors - dictionary.reconstruct(codes)).norm() / vectors.norm().clamp_min(1e-12))
    energy = codes.pow(2).sum(0) * dictionary.basis.pow(2).sum(1)
    n_concepts = codes.shape[1]
    images, position = torch.unique(sample.images, return_inverse=True)  # at most one row per sample
    per_image = torch.zeros(len(images), n_concepts, dtype=torch.float64).index_add_(
        0, position, codes.double()
    )
    mass = per_image.sum(0)
    top_share, top_image = per_image.max(0).values / mass.clamp_min(1e-300), images[per_image.argmax(0)]
    singular = torch.linalg.svdvals(vectors.double())
    return {
        "relative_error": error,
        "svd_error": float(singular[n_concepts:].norm() / singular.norm().clamp_min(1e-300)),
        "sparsity": float((codes == 0).float().mean()),
        "active": float((codes > 0).sum(1).float().mean()),
        "share": (energy / energy.sum().clamp_min(1e-30)).tolist(),
        "dead": (mass == 0).tolist(),
        "top_image": [names(int(i)) for i in top_image],
        "top_image_share": top_share.tolist(),
    }


def _passes(progress: bool | Callable[[int, int], None]) -> tuple:
    """The progress of pass 1 and of pass 2: a callable hears both as one count of ``2 N`` image reads (pass 1
    from 0 to ``N``, the fit at ``N``, pass 2 from ``N`` to ``2 N``; a cached fit starts at ``N``)."""
    if not callable(progress):
        return progress, progress
    return (
        lambda done, total: progress(done, 2 * total),
        lambda done, total: progress(total + done, 2 * total),
    )


def _non_negative(reservoir: Reservoir, stage: str) -> Callable:
    """The reservoir, refusing (on the first batch that holds one, not after the whole pass) a negative value,
    which NMF cannot factorise."""

    def offer(maps: dict[str, torch.Tensor], image_indices: torch.Tensor) -> dict[str, torch.Tensor]:
        negative = float((maps[stage] < 0).float().mean())
        if negative > 0:
            raise InvalidArgumentError(
                f"{stage} holds negative values ({negative:.0%} of those of a batch of {len(image_indices)} "
                'images) and NMF factorises non-negative features only. Use method="semi-nmf" (signed features, '
                'non-negative codes) or method="topk-sae".'
            )
        return reservoir(maps, image_indices)

    return offer


def _fit(
    bb: Backbone,
    images,
    stage: str,
    n_concepts: int,
    method: str,
    seed: int,
    samples: int,
    active: int | None,
    k: int,
    options: dict,
) -> tuple[Dictionary, dict, dict]:
    """Pass 1 and the fit: ``(dictionary, quality, timings and sizes)``."""
    reservoir, scanned = Reservoir(samples, seed), 0
    bar = progress_bar(len(images), 0, options["progress"], f"sample {stage}")
    started = time.perf_counter()
    try:
        shards = plan_shards(len(images), options["shard_size"])
        for _, result in scan_shards(
            bb,
            images,
            shards,
            [stage],
            1,
            options["batch_size"],
            options["num_workers"],
            on_batch=bar.update,
            project=_non_negative(reservoir, stage) if method == "nmf" else reservoir,
        ):
            scanned += result.scanned
    finally:
        bar.close()
    sampled = time.perf_counter()
    if scanned < k:
        raise DatasetError(
            f"Only {scanned} of the {len(images)} images could be read, fewer than k={k}. "
            "Pass more images or a smaller k."
        )
    sample = reservoir.sample(stage)
    if len(sample.keys) < n_concepts:
        raise InvalidArgumentError(
            f"{stage} gave {len(sample.keys)} sampled locations, fewer than n_concepts={n_concepts}. "
            "Pass fewer concepts, more images or a larger samples=."
        )
    dictionary = fit_dictionary(sample.vectors, n_concepts, method, seed, active)
    fitted = time.perf_counter()
    quality = _quality(dictionary, sample, images.name)
    timings = {
        "scanned": scanned,
        "sampled": len(sample.keys),
        "reservoir_bytes": reservoir.nbytes,
        "pass1_seconds": round(sampled - started, 3),
        "fit_seconds": round(fitted - sampled, 3),
    }
    return dictionary, quality, timings


def concepts(
    backbone: str | os.PathLike | Backbone,
    source: SourceT,
    stage: str | None = None,
    n_concepts: int = 32,
    method: str = "nmf",
    *,
    k: int = 9,
    seed: int = 0,
    samples: int = DEFAULT_SAMPLES,
    active: int | None = None,
    cache: str | os.PathLike | None = DEFAULT_CACHE,
    backend: str = "local",
    address: str | None = None,
    batch_size: int = 32,
    num_workers: int = 2,
    shard_size: int = 256,
    device: str | torch.device = "auto",
    pretrained: bool = True,
    progress: bool | Callable[[int, int], None] = True,
) -> Concepts:
    """Learn ``n_concepts`` directions of a stage over ``source`` and find each one's exemplars (module docs).

    Args:
        backbone: a spec or a loaded :class:`~explorer.Backbone` (not changed).
        source: what :func:`explorer.scan` reads: a folder, paths, a torch or Hugging Face dataset.
        stage: a stage name (``bb.stage_names``); default the backbone's last selected stage.
        n_concepts: directions to learn; at most the stage's channels for the NMFs.
        method: ``"nmf"`` (non-negative stages only), ``"semi-nmf"`` (any stage) or ``"topk-sae"``.
        k: exemplars per concept.
        seed: the reservoir's and the fit's seed: the same seed gives the same concepts.
        samples: map locations sampled for the fit (the reservoir's bound).
        active: ``"topk-sae"`` only: concepts active per location (default ``max(1, n_concepts // 8)``).
        cache: the scan cache folder (the fit is cached there too); None keeps everything in memory.
        backend: ``"local"`` or ``"ray"`` for the exemplar pass (pass 1 samples locally).
        address, batch_size, num_workers, shard_size, device, pretrained: as :func:`explorer.scan`.
        progress: as :func:`explorer.scan` (a bar per pass); a callable ``(done, total)`` hears both passes as
            one count of ``2 N`` image reads: pass 1 up to ``N``, the fit at ``N``, pass 2 up to ``2 N``.

    Returns:
        :class:`Concepts`: ``basis``, ``encode``, ``top``, ``crops``, ``save_html``, quality figures.

    Raises:
        InvalidArgumentError: a bad argument, a stage with fewer channels or sampled locations than concepts,
            or ``method="nmf"`` on a stage with negative values.
        LayerNotFoundError: ``stage`` is not a stage of the backbone.
        DatasetError: fewer readable images than ``k``.
        MissingDependencyError: scikit-learn is not installed (``pip install "explorer[concepts]"``).

    Example::

        >>> con = explorer.concepts(bb, explorer.sample_dataset(16), stage="blocks.4", n_concepts=8,
        ...                         method="semi-nmf", k=4, cache=None, progress=False)
        >>> con.encode(maps).shape                 # the cat's maps
        torch.Size([1, 8, 14, 14])
    """
    require(method)  # before any image is read
    stage = text(
        "stage", stage, hint="pass a stage name (bb.stage_names), or None for the last.", optional=True
    )
    k, batch_size, shard_size, num_workers = check_options(
        k=k,
        cache=cache,
        backend=backend,
        address=address,
        batch_size=batch_size,
        num_workers=num_workers,
        shard_size=shard_size,
        pretrained=pretrained,
        progress=progress,
    )
    n_concepts = whole("n_concepts", n_concepts, minimum=1)
    seed = whole("seed", seed, maximum=2**32 - 1, hint=" scikit-learn's seeds are 32-bit.")
    samples = whole("samples", samples, minimum=1)
    images = open_source(source)
    if len(images) < k:
        raise DatasetError(
            f"The source holds {len(images)} images, fewer than k={k}. Pass more images or a smaller k."
        )
    bb = (
        backbone
        if isinstance(backbone, Backbone)
        else load_backbone(backbone, pretrained=pretrained, device=device)
    )
    stage = bb.out_features[-1] if stage is None else stage
    if stage not in bb.stage_names:
        raise LayerNotFoundError(f'No stage "{stage}"; the stages are: {", ".join(bb.stage_names)}.')
    channels = bb.stage(stage).channels
    if method != "topk-sae" and n_concepts > channels:
        raise InvalidArgumentError(
            f"n_concepts={n_concepts}, but {stage} has {channels} channels and {method} finds at most that many. "
            f'Pass n_concepts <= {channels}, a wider stage, or method="topk-sae" (overcomplete).'
        )
    first, second = _passes(progress)
    options = {
        "batch_size": batch_size,
        "num_workers": num_workers,
        "shard_size": shard_size,
        "progress": first,
    }
    parts = {
        "format": FIT_FORMAT,
        "spec": bb.spec,
        "weights_sha256": weights_digest(bb.model),
        "preprocess": bb.preprocess.settings,
        "source": [images.kind, images.fingerprint, len(images)],
        "stage": stage,
        "n_concepts": n_concepts,
        "method": method,
        "seed": seed,
        "samples": samples,
        "active": active,
        "k": k,
        "dtype": str(bb.dtype),
    }
    folder = None
    if cache is not None and images.fingerprint is not None:
        folder = Path(cache).expanduser() / f"concepts-{cache_key(parts)}"
    fit = _read_fit(folder) if folder is not None else None
    cached = fit is not None
    if fit is None:
        fit = _fit(bb, images, stage, n_concepts, method, seed, samples, active, k, options)
        if folder is not None:
            _write_fit(folder, *fit)
    dictionary, quality, timings = fit
    started = time.perf_counter()
    found = scan(
        bb,
        images,
        out_features=[stage],
        k=k,
        cache=cache,
        backend=backend,
        address=address,
        device=device,
        progress=second,
        project=ConceptCodes(dictionary, stage),
        **{name: options[name] for name in ("batch_size", "num_workers", "shard_size")},
    )
    info = {
        "spec": bb.spec,
        "weights": bb.weights,
        "weights_sha256": parts["weights_sha256"],
        "stage": stage,
        "method": method,
        "n_concepts": n_concepts,
        "seed": seed,
        "samples": samples,
        **timings,
        "fit_cached": cached,
        "pass2_seconds": round(time.perf_counter() - started, 3),
    }
    result = Concepts(info, dictionary, quality, found)
    for warning in result.warnings:
        _log.warning("%s %s: %s", bb.spec, stage, warning)
    return result


def _read_fit(folder: Path) -> tuple[Dictionary, dict, dict] | None:
    from safetensors.torch import load

    try:
        record = json.loads((folder / "fit.json").read_text())
        tensors = load((folder / "fit.safetensors").read_bytes())
        return Dictionary.from_tensors(record["method"], tensors), record["quality"], record["timings"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as err:  # a damaged fit is refitted, never trusted
        _log.warning("the cached fit in %s is unreadable (%s); fitting again", folder, err)
        return None


def _write_fit(folder: Path, dictionary: Dictionary, quality: dict, timings: dict) -> None:
    from safetensors.torch import save

    try:
        make_folder(folder)
    except OSError as err:
        raise CacheError(f"Cannot create {folder} ({err.strerror}). Pass cache=<a writable folder>.") from err
    write_atomic(folder / "fit.safetensors", save(dictionary.tensors()))
    record = {"method": dictionary.method, "quality": quality, "timings": timings}
    write_atomic(folder / "fit.json", json.dumps(record, indent=1).encode())
