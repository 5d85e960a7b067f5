""":func:`scan`: every image of a source through a backbone once, reduced to each channel's exemplars and statistics.

The flow: the spec becomes a :class:`~explorer.Backbone`, the source an
:class:`~explorer.dataset.sources.ImageSource`; the cache key is computed (:mod:`explorer.dataset.store`); finished
shards are read back; the others run on the local backend (:mod:`explorer.dataset.local`) or on Ray
(:mod:`explorer.dataset.ray_backend`), each written as it finishes; shards merge in order into one
:class:`~explorer.dataset.results.Scan`, which is saved in the cache folder too, so the same scan again returns at
once.

Example::

    >>> scan = explorer.scan("default", explorer.sample_dataset(16), out_indices=[1, 2], k=4, cache=None)
    >>> scan.stages, len(scan)
    (['blocks.1', 'blocks.2'], 16)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import torch

from .._args import shown, whole
from ..backbones import Backbone, load_backbone
from ..errors import DatasetError, InvalidArgumentError
from ..hooks import resolve_layers
from ..stages import OutFeaturesT, OutIndicesT, select_stages
from .fields import receptive_fields
from .local import Projection, plan_shards, scan_shards
from .reduce import MAX_K, NO_IMAGE, Reduction
from .results import Scan
from .sources import SourceT, open_source
from .store import DEFAULT_CACHE, FORMAT_VERSION, ShardResult, ShardStore, cache_key, weights_digest

__all__ = ["BACKENDS", "check_options", "progress_bar", "scan"]

_log = logging.getLogger(__name__)

BACKENDS = ("local", "ray")
"""The values ``backend=`` takes."""


MAX_FAILED_SHARE = 0.5
"""Past this share of a source's images failing to read, a scan stops (the rest would say little)."""

_MOST = 2**40


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: no check
        return 2**62


def _check_batch(bb: Backbone, images: int, batch_size: int, shard_size: int) -> None:
    """Refuse a batch whose pixels alone would take over a quarter of the machine's (or the GPU's) memory."""
    batch = min(batch_size, shard_size, images)
    height, width = bb.preprocess.input_size
    need = batch * 3 * height * width * 4
    memory = _physical_memory()
    if bb.device.type == "cuda":
        memory = min(memory, torch.cuda.get_device_properties(bb.device).total_memory)
    if need > memory // 4:
        raise InvalidArgumentError(
            f"batch_size={batch_size}: a batch of {batch:,} images at {height}x{width} holds {need / 2**30:.1f} GiB "
            f"of pixels alone, over a quarter of the {memory / 2**30:.0f} GiB this machine has. "
            "Pass a smaller batch_size (32 is a good start)."
        )


def _too_many_failed(failed: list[tuple[str | int, str]], total: int) -> DatasetError:
    first = "; ".join(f"{name}: {reason}" for name, reason in failed[:3])
    what = (
        f"None of the {total} images could be read"
        if len(failed) >= total
        else f"{len(failed)} of the {total} images could not be read"
    )
    return DatasetError(
        f"{what}, so the scan stopped (first: {first}). "
        "Check the files' permissions and formats, or point at a folder of JPEG, PNG, WebP, GIF, BMP or TIFF "
        "images."
    )


def _names(
    bb: Backbone,
    out_indices: OutIndicesT | None,
    out_features: OutFeaturesT | None,
    layers: Sequence[str] | None,
    chosen: bool,
) -> list[str]:
    """What to scan: the selected stages (unless only layers were asked for), then the layers."""
    if (
        layers is not None
        and not isinstance(layers, str)
        and (not isinstance(layers, (list, tuple)) or not all(isinstance(name, str) for name in layers))
    ):
        raise InvalidArgumentError(
            f"layers={shown(layers)}; pass a list of layer names (explorer.list_layers)."
        )
    layers = [layers] if isinstance(layers, str) else list(layers or [])
    if out_indices is not None or out_features is not None:
        stages = select_stages(bb.stage_names, out_features, out_indices)[0]
    else:
        stages = [] if layers and not chosen else bb.out_features
    if layers:
        resolve_layers(bb.model, [name for name in layers if name not in bb.stage_names])
    return list(dict.fromkeys([*stages, *layers]))


class _Callback:
    """A progress bar that calls ``report(done, total)`` instead of drawing (for the panel)."""

    def __init__(self, report: Callable[[int, int], None], total: int, initial: int) -> None:
        self.report, self.total, self.done = report, total, initial
        report(initial, total)

    def update(self, count: int) -> None:
        self.done += count
        self.report(self.done, self.total)

    def close(self) -> None:
        pass


def progress_bar(total: int, initial: int, progress: bool | Callable[[int, int], None], description: str):
    """A progress bar over ``total`` images (``update(n)``, ``close()``): tqdm's, or calls to ``progress``."""
    if callable(progress):
        return _Callback(progress, total, initial)
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=initial, unit="img", disable=not progress, desc=description, smoothing=0.1
    )


def check_options(
    *,
    k: object,
    cache: object,
    backend: object,
    address: object,
    batch_size: object,
    num_workers: object,
    shard_size: object,
    pretrained: object,
    progress: object,
) -> tuple[int, int, int, int]:
    """Check the options every scan takes (:func:`scan`'s, and those :func:`~explorer.concepts` passes on)
    before anything is read or allocated; returns ``(k, batch_size, shard_size, num_workers)`` as ints.

    Raises:
        InvalidArgumentError: the first option of the wrong type or out of range, with the fix.
    """
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise InvalidArgumentError(f"backend={shown(backend)}; choose one of: {', '.join(BACKENDS)}.")
    k = whole("k", k, minimum=1, maximum=MAX_K, hint=" A channel's exemplars past the first few add little.")
    batch_size = whole("batch_size", batch_size, minimum=1, maximum=_MOST)
    shard_size = whole("shard_size", shard_size, minimum=1, maximum=_MOST)
    cpus = os.cpu_count() or 1
    num_workers = whole(
        "num_workers",
        num_workers,
        minimum=0,
        maximum=max(8, 4 * cpus),
        hint=f" This machine has {cpus} CPUs; 0 reads in this process.",
    )
    if address is not None and not isinstance(address, str):
        raise InvalidArgumentError(
            f"address={shown(address)}; pass a Ray address such as 'ray://head:10001'."
        )
    if not isinstance(pretrained, bool):
        raise InvalidArgumentError(f"pretrained={shown(pretrained)}; pass True or False.")
    if not (isinstance(progress, bool) or callable(progress)):
        raise InvalidArgumentError(
            f"progress={shown(progress)}; pass True, False or a function (done, total)."
        )
    if cache is not None and not isinstance(cache, (str, os.PathLike)):
        raise InvalidArgumentError(
            f"cache={shown(cache)}; pass a folder, or None to keep the scan in memory."
        )
    if cache is not None and ("\x00" in str(cache) or not str(cache).strip()):
        raise InvalidArgumentError(
            f"cache={shown(str(cache))} is empty or holds a NUL byte; pass a folder, or None."
        )
    return k, batch_size, shard_size, num_workers


def scan(
    backbone: str | os.PathLike | Backbone,
    source: SourceT,
    out_indices: OutIndicesT | None = None,
    out_features: OutFeaturesT | None = None,
    layers: Sequence[str] | None = None,
    *,
    k: int = 9,
    cache: str | os.PathLike | None = DEFAULT_CACHE,
    backend: str = "local",
    address: str | None = None,
    batch_size: int = 32,
    num_workers: int = 2,
    shard_size: int = 256,
    device: str | torch.device = "auto",
    pretrained: bool = True,
    progress: bool | Callable[[int, int], None] = True,
    project: Projection | None = None,
) -> Scan:
    """Scan every image of ``source``: per channel, the top-k images by spatial maximum, and dataset statistics.

    Each image runs through the backbone once; the pass stops after the last scanned stage or layer. Memory does
    not grow with the dataset: only the running top-k and statistics are kept (see
    :mod:`explorer.dataset.reduce`). Ties break by image order, so the result is deterministic, and the same on
    every backend and after any number of resumes.

    Args:
        backbone: a spec (``"default"``, ``"resnet50"``, ``"hf:..."``, a path) or a loaded
            :class:`~explorer.Backbone` (its selection is used unless ``out_indices``/``out_features`` are given;
            it is not changed).
        source: a folder (recursive), a list of image paths, a torch ``Dataset`` (of images or
            ``(image, label)``) or a ``datasets.Dataset`` with an image column.
        out_indices: stages to scan, by index (transformers' rules); neither this nor ``out_features`` scans the
            backbone's selection (a spec's: its last stage).
        out_features: stages to scan, by name.
        layers: any named modules as well (:func:`explorer.list_layers`); with ``layers`` alone only they are
            scanned.
        k: exemplars kept per channel.
        cache: the folder of content-hashed, resumable scans; None keeps the scan in memory.
        backend: ``"local"`` or ``"ray"`` (the ``ray`` extra).
        address: the Ray cluster to join (``"ray://head:10001"``, ``"auto"``); None starts a local Ray unless one
            is running or ``RAY_ADDRESS`` is set.
        batch_size: images per forward pass.
        num_workers: DataLoader processes reading images (local backend).
        shard_size: images per shard: the unit of caching, of resuming and of Ray's work.
        device: for a spec: ``"auto"`` (cuda, then mps, then cpu) or any torch device.
        pretrained: for a spec: real weights (True) or random init.
        progress: show a progress bar (tqdm; the notebook flavour in a notebook); or a function called with
            ``(images done, images in all)`` after every batch instead.
        project: scan what this makes of each batch's maps instead of the maps (concept codes:
            :func:`explorer.concepts`); see :data:`explorer.dataset.local.Projection`. Its ``digest`` is part of
            the cache key.

    Returns:
        A :class:`~explorer.Scan`: ``top(stage, channel)``, ``stats(stage)``, ``crops(stage, channel)``,
        ``save_html(folder)``.

    Raises:
        DatasetError: the source is missing, empty, or holds no readable image.
        StageSelectionError, LayerNotFoundError: a stage or layer that does not exist.
        CacheError: the cache folder is not writable, or the disk is full.
        MissingDependencyError: ``backend="ray"`` without Ray installed.

    Example::

        >>> scan = explorer.scan("default", explorer.sample_dataset(16), out_indices=[2], k=4, progress=False)
        >>> ex = scan.top("blocks.2", 17)[0]
        >>> ex.source, ex.index, round(ex.value, 2), ex.cell, ex.box
        ('.../00001_brick.jpg', 1, 25.46, (12, 0), (0, 80, 24, 120))
    """
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
    if project is not None and not isinstance(getattr(project, "digest", None), str):
        raise InvalidArgumentError(
            "project= needs a digest attribute (a string that changes with what it computes) for the cache key."
        )
    if backend == "ray":
        from .ray_backend import check_address, import_ray

        import_ray()  # fail before the model loads
        check_address(address)
    images = open_source(source)
    if isinstance(backbone, Backbone):
        bb, chosen = backbone, True
    else:
        bb = load_backbone(backbone, out_indices, out_features, pretrained=pretrained, device=device)
        chosen = False
    names = _names(bb, out_indices, out_features, layers, chosen)
    if not getattr(bb.preprocess, "fixed_size", True):
        raise DatasetError(
            f"{bb.spec}: its image processor gives each image its own size (it keeps the aspect ratio or pads), "
            "and a scan ranks cells of one map size. Save the processor with a fixed size (size={'height': H, "
            "'width': W}) to scan; bb.extract, capture and overlays follow each image's real size."
        )
    _check_batch(bb, len(images), batch_size, shard_size)
    parts = {
        "format": FORMAT_VERSION,
        "spec": bb.spec,
        "weights_sha256": weights_digest(bb.model),
        "names": names,
        "preprocess": bb.preprocess.settings,
        "source": [images.kind, images.fingerprint, len(images)],
        "k": k,
        "shard_size": shard_size,
        "batch_size": batch_size,
        "device": bb.device.type,
        "precision": str(bb.precision),
        "dtype": str(bb.dtype),
    }
    if project is not None:  # only then, so the keys of plain scans stay as they were
        parts["project"] = project.digest
    store = None
    if cache is not None and images.fingerprint is None:
        _log.info(
            "this %s source has no fingerprint; the scan is not cached (set dataset.fingerprint)", images.kind
        )
    elif cache is not None:
        store = ShardStore(cache, cache_key(parts), parts)
        if (store.folder / "scan.json").exists():
            try:
                return Scan.load(store.folder, backbone=bb, source=images, project=project)
            except Exception as err:  # a damaged result is recomputed from its shards, never trusted
                _log.warning(
                    "the saved result in %s is unreadable (%s); merging its shards again", store.folder, err
                )

    shards = plan_shards(len(images), shard_size)
    pending: dict[int, ShardResult] = {}
    if store is not None:
        pending = {
            s.index: found
            for s in shards
            if (found := store.load_shard(s.index, k, s.stop - s.start)) is not None
        }
    todo = [s for s in shards if s.index not in pending]
    done = sum(s.stop - s.start for s in shards if s.index in pending)
    bar = progress_bar(len(images), done, progress, f"scan {bb.spec}")
    if backend == "ray":
        from .ray_backend import ray_shards

        finished = ray_shards(bb, images, todo, names, k, batch_size, address, project=project)
    else:
        finished = scan_shards(
            bb, images, todo, names, k, batch_size, num_workers, on_batch=bar.update, project=project
        )

    merged, skipped, counts = Reduction(k), [], {"scanned": 0, "next": 0}
    failed: list[tuple[str | int, str]] = []

    def merge_ready() -> (
        None
    ):  # in shard order: the same sums as one pass, on every backend, after any resume
        while counts["next"] in pending:
            ready = pending.pop(counts["next"])
            merged.merge(ready.reduction)
            counts["scanned"] += ready.scanned
            skipped.extend(ready.skipped)
            counts["next"] += 1

    def check_failed(result: ShardResult) -> None:  # in any order: stop as soon as too many failed
        failed.extend(result.skipped)
        if len(failed) > MAX_FAILED_SHARE * len(images) and len(failed) > 1:
            raise _too_many_failed(failed, len(images))

    try:
        for result in pending.values():
            check_failed(result)
        merge_ready()
        for shard, result in finished:
            check_failed(result)
            if store is not None:
                store.save_shard(shard.index, result)
            if backend == "ray":
                bar.update(shard.stop - shard.start)
            pending[shard.index] = result
            merge_ready()
    finally:
        bar.close()
    scanned = counts["scanned"]
    skipped = [*images.unreadable, *skipped]
    if scanned == 0:
        first = "; ".join(f"{name}: {reason}" for name, reason in skipped[:3])
        raise DatasetError(
            f"None of the {len(images)} images could be read ({first}). "
            "Check the files, or point at a folder of JPEG, PNG, WebP, GIF, BMP or TIFF images."
        )
    referenced = {
        int(i) for stage in merged.stages.values() for i in stage.images.unique().tolist() if i != NO_IMAGE
    }
    info = {
        **{key: parts[key] for key in ("format", "spec", "weights_sha256", "k", "shard_size", "batch_size")},
        "weights": bb.weights,
        "stages": names,
        "input_size": list(bb.preprocess.input_size),
        "fields": receptive_fields(bb, names),
        "source_kind": images.kind,
        "images": len(images),
        "scanned": scanned,
        "key": store.key if store is not None else None,
    }
    result = Scan(
        info,
        merged,
        {i: images.name(i) for i in sorted(referenced)},
        skipped,
        backbone=bb,
        source=images,
        project=project,
    )
    if store is not None:
        result.save(store.folder)
    return result
