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

    >>> con = explorer.concepts("default", explorer.sample_dataset(128), stage="blocks.4", n_concepts=16,
    ...                         method="semi-nmf", k=6)
    >>> con.basis.shape, round(con.relative_error, 2), round(con.quality["svd_error"], 2)
    (torch.Size([16, 112]), 0.74, 0.74)
    >>> con.top(3)[0]
    Exemplar(source='.../00103_coins.jpg', index=103, value=40.38, cell=(10, 12), box=(133, 101, 224, 224))
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ._args import backbone as _backbone
from ._args import shown, text, whole
from .backbones import Backbone, load_backbone
from .dataset.local import plan_shards, scan_shards
from .dataset.reservoir import Reservoir, StageSample
from .dataset.results import Exemplar, Scan, _read_small
from .dataset.scanner import _progress, check_options, scan
from .dataset.sources import SourceT, open_source
from .dataset.store import DAMAGED, DEFAULT_CACHE, cache_key, weights_digest
from .dictionary import Dictionary, fit_dictionary, require
from .errors import CacheError, DatasetError, InvalidArgumentError, LayerNotFoundError
from .files import as_path, make_folder, write_atomic

__all__ = ["DEFAULT_SAMPLES", "ONE_IMAGE_SHARE", "Concepts", "concepts"]

_log = logging.getLogger(__name__)

DEFAULT_SAMPLES = 50_000
"""Map locations sampled per fit (at 112 channels: about 24 MB)."""

ONE_IMAGE_SHARE = 0.5
"""A concept holding at least this share of its sampled code mass in one image is warned about."""

FIT_FORMAT = 1
"""Bumped whenever a cached fit changes meaning; part of its key."""


def _encode_map(dictionary: Dictionary, fmap: torch.Tensor) -> torch.Tensor:
    batch, channels, height, width = fmap.shape
    codes = dictionary.codes(fmap.float().permute(0, 2, 3, 1).reshape(-1, channels))
    return codes.view(batch, height, width, -1).permute(0, 3, 1, 2).contiguous()


class _Codes:
    """The scan projection of pass 2: the stage's map becomes its concept codes."""

    def __init__(self, dictionary: Dictionary, stage: str) -> None:
        self.dictionary, self.stage = dictionary, stage
        self.digest = f"concepts:{stage}:{dictionary.digest}"

    def __call__(self, maps: dict[str, torch.Tensor], image_indices: torch.Tensor) -> dict[str, torch.Tensor]:
        return {self.stage: _encode_map(self.dictionary, maps[self.stage])}


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


def _warnings(quality: dict) -> list[str]:
    found = []
    for concept, (dead, share, image) in enumerate(
        zip(quality["dead"], quality["top_image_share"], quality["top_image"])
    ):
        if dead:
            found.append(f"concept {concept} never fires on the sample; fit fewer concepts or another seed.")
        elif share >= ONE_IMAGE_SHARE:
            found.append(
                f"concept {concept}: {share:.0%} of its sampled activation is in one image ({image}); "
                "it may describe that image rather than the dataset."
            )
    return found


class Concepts:
    """The result of :func:`concepts`; see the module docs.

    Attributes:
        info: what ran: ``spec``, ``weights``, ``weights_sha256``, ``stage``, ``method``, ``n_concepts``,
            ``seed``, ``samples`` (asked), ``sampled`` (held), ``reservoir_bytes``, ``pass1_seconds``,
            ``fit_seconds`` (those of the run that fitted, when ``fit_cached``), ``pass2_seconds``.
        quality: ``relative_error``, ``svd_error``, ``sparsity``, ``active``, ``share``, ``dead``, ``top_image``,
            ``top_image_share`` (see the module docs).
        scan: the pass-2 :class:`~explorer.Scan`: channel ``i`` of :attr:`stage` is concept ``i``.
    """

    def __init__(self, info: dict, dictionary: Dictionary, quality: dict, scan: Scan) -> None:
        self.info, self.quality, self.scan = dict(info), dict(quality), scan
        self._dictionary = dictionary
        self.warnings = _warnings(self.quality)

    @property
    def stage(self) -> str:
        return str(self.info["stage"])

    @property
    def basis(self) -> torch.Tensor:
        """``(n_concepts, C)``: the concept directions in the stage's feature space."""
        return self._dictionary.basis

    def __len__(self) -> int:
        return int(self.basis.shape[0])

    @property
    def relative_error(self) -> float:
        """``||A - codes @ basis|| / ||A||`` over the sampled locations."""
        return float(self.quality["relative_error"])

    @property
    def sparsity(self) -> float:
        """The share of zero codes over the sampled locations."""
        return float(self.quality["sparsity"])

    @property
    def shares(self) -> np.ndarray:
        """``(n_concepts,)``: each concept's share of the concepts' energy on the sample (they sum to 1)."""
        return np.asarray(self.quality["share"])

    def encode(self, maps: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The concept codes, ``(N, n_concepts, h, w)``, of ``(N, C, h, w)`` maps of :attr:`stage` (or of a
        :class:`~explorer.FeatureMaps` holding it), on their device.

        Example::

            >>> con.encode(bb.capture(pixels, ["blocks.4"])).shape
            torch.Size([8, 16, 14, 14])
        """
        if isinstance(maps, Mapping):
            if self.stage not in maps:
                raise LayerNotFoundError(
                    f"These maps hold no {self.stage} ({', '.join(maps)}); capture it: bb.capture(x, [{self.stage!r}])."
                )
            maps = maps[self.stage]
        channels = int(self.basis.shape[1])
        if not isinstance(maps, torch.Tensor) or maps.dim() != 4 or maps.shape[1] != channels:
            shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
            raise InvalidArgumentError(
                f"encode() takes (N, {channels}, h, w) maps of {self.stage}, got {shape}; "
                "add the batch axis with maps[None]."
            )
        return _encode_map(self._dictionary, maps)

    def _concept(self, concept: int) -> int:
        return whole("concept", concept, maximum=len(self) - 1)

    def top(self, concept: int) -> list[Exemplar]:
        """The concept's exemplars, best first, exactly as :meth:`explorer.Scan.top` (value: the concept's
        spatial maximum code on the image)."""
        return self.scan.top(self.stage, self._concept(concept))

    def crops(self, concept: int, alpha: float = 0.5, cmap: str = "inferno") -> list[Image.Image]:
        """The receptive-field crops of the concept's exemplars with the concept's code overlaid (where it
        fires), best first."""
        return self.scan.crops(self.stage, self._concept(concept), alpha=alpha, cmap=cmap)

    # -- saving and loading ----------------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike) -> Path:
        """Write the pass-2 scan, ``concepts.json`` and ``concepts.safetensors`` into ``folder``."""
        from safetensors.torch import save

        folder = self.scan.save(folder)
        write_atomic(folder / "concepts.safetensors", save(self._dictionary.tensors()))
        record = {"info": self.info, "method": self._dictionary.method, "quality": self.quality}
        write_atomic(folder / "concepts.json", json.dumps(record, indent=1).encode())
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike, *, backbone: Backbone | None = None, source=None) -> Concepts:
        """Read concepts written by :meth:`save` or :meth:`save_html`.

        Args:
            path: the folder.
            backbone: the backbone they were fitted on (needed for crops on random weights); checked.
            source: the dataset, for crops of a dataset's concepts.

        Raises:
            CacheError: nothing is saved there, or the files are damaged.
            InvalidArgumentError: ``backbone`` has other weights than those the concepts were fitted on.
        """
        from safetensors.torch import load

        folder = as_path(path, CacheError).expanduser()
        if backbone is not None:
            _backbone(backbone, call="explorer.Concepts.load(folder, backbone=bb)")
        try:
            record = json.loads(_read_small(folder / "concepts.json"))
            dictionary = Dictionary.from_tensors(
                record["method"], load((folder / "concepts.safetensors").read_bytes())
            )
            info = record["info"]
            if not (isinstance(info, dict) and isinstance(record["quality"], dict)):
                raise ValueError("concepts.json holds no info or quality mapping")
            for key in ("spec", "stage", "weights_sha256", "method"):
                if not isinstance(info[key], str):
                    raise ValueError(f"info[{key!r}] is not a string")
        except FileNotFoundError as err:
            raise CacheError(
                f"No saved concepts at {shown(str(path))}. Pass a folder written by concepts.save_html()."
            ) from err
        except DAMAGED as err:
            raise CacheError(
                f"The concepts at {folder} are damaged ({shown(str(err))}). Fit them again."
            ) from err
        if backbone is not None and weights_digest(backbone.model) != info["weights_sha256"]:
            raise InvalidArgumentError(
                f"These concepts were fitted on other weights of {info['spec']!r}; pass the backbone they were "
                "fitted on, or fit them again with explorer.concepts(bb, ...)."
            )
        found = Scan.load(folder, backbone=backbone, source=source, project=_Codes(dictionary, info["stage"]))
        return cls(info, dictionary, record["quality"], found)

    def save_html(self, folder: str | os.PathLike) -> Path:
        """A static report (``index.html``: quality figures, warnings, every concept's exemplar crops), saved
        with the concepts, so :meth:`load` reads the folder back. Returns the path of ``index.html``."""
        from .concept_report import write_concepts_report

        folder = self.save(as_path(folder).expanduser())
        return write_concepts_report(self, folder)

    def __repr__(self) -> str:
        return (
            f"Concepts({self.info['spec']!r}, {self.stage}, {len(self)} {self.info['method']} concepts, "
            f"{len(self.scan)} images, relative error {self.relative_error:.3f}, "
            f"sparsity {self.sparsity:.1%}, {len(self.warnings)} warnings)"
        )


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
    bar = _progress(len(images), 0, options["progress"], f"sample {stage}")
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

        >>> con = explorer.concepts("default", "photos/", stage="blocks.4", n_concepts=16, method="semi-nmf")
        >>> con.encode(bb.capture(pixels, ["blocks.4"])).shape
        torch.Size([8, 16, 14, 14])
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
    stages = {s.name: s for s in bb.all_stages}
    if stage not in stages:
        raise LayerNotFoundError(f'No stage "{stage}"; the stages are: {", ".join(bb.stage_names)}.')
    channels = stages[stage].channels
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
        project=_Codes(dictionary, stage),
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
