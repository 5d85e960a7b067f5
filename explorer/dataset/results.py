"""A finished scan: every channel's exemplars, dataset statistics and histograms; crops; saving and loading.

A :class:`Scan` is what :func:`explorer.scan` returns and what :meth:`Scan.load` reads back. It holds the merged
reduction (top-k and sums, a few kilobytes per stage), the receptive-field side of every stage, the names of
the images that are exemplars, and what the scan ran on. Crops need the images and the model again: a live scan
keeps both; a loaded one reads the images from their paths (or the ``source=`` given) and reloads the spec's
pretrained weights (or takes ``backbone=``), checking that they are the weights that were scanned.

Saved form (``Scan.save(folder)``, also inside every cache folder and every HTML report): ``scan.json`` (what
ran, the skipped images, the exemplars' names, the SHA-256 of the table) and ``scan.parquet`` (the tables of
:func:`explorer.dataset.store.reduction_to_parquet`).

Example::

    >>> scan = explorer.scan("default", explorer.sample_dataset(16), out_indices=[2], k=4, cache=None, progress=False)
    >>> ex = scan.top("blocks.2", 17)
    >>> ex[0].source, round(ex[0].value, 2), ex[0].cell, ex[0].box
    ('.../00001_brick.jpg', 25.46, (12, 0), (0, 80, 24, 120))
    >>> scan.stats("blocks.2").mean.shape
    (40,)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .._args import shown, whole
from ..errors import CacheError, InvalidArgumentError, LayerNotFoundError
from ..files import as_path, make_folder, write_atomic
from ..histograms import Histogram
from ..preprocessing import model_view
from ..render import OVERLAY_CMAP, overlay
from ..stats import ChannelStats
from .fields import cell_box
from .reduce import NO_IMAGE, Reduction, StageReduction, histogram_edges
from .saved import check_record, check_reduction, read_small, record_digest, saved_folder
from .sources import ImageSource, open_source
from .store import DAMAGED, reduction_from_parquet, reduction_to_parquet, weights_digest

__all__ = ["Exemplar", "Scan"]


@dataclass(frozen=True)
class Exemplar:
    """One of a channel's top images.

    Attributes:
        source: the image's path (folder and path sources) or its position (datasets).
        index: its position in the scan's image order.
        value: the channel's spatial maximum on it.
        cell: ``(row, col)`` of the maximum in the stage's map (the first such cell, row-major).
        box: ``(left, top, right, bottom)``: the cell's receptive field, in pixels of the image as the model
            saw it (:func:`explorer.model_view`); see :mod:`explorer.dataset.fields` for the rule.
    """

    source: str | int
    index: int
    value: float
    cell: tuple[int, int]
    box: tuple[int, int, int, int]


class Scan:
    """The result of :func:`explorer.scan`; see the module docs.

    Attributes:
        info: what ran: ``spec``, ``weights``, ``weights_sha256``, ``stages``, ``input_size``, ``k``,
            ``fields`` (receptive-field side per stage), ``images`` (listed), ``scanned``, ``key``, ...
        skipped: ``[(source, reason), ...]`` for every image that could not be read.
    """

    def __init__(
        self,
        info: dict,
        reduction: Reduction,
        names: dict[int, str | int],
        skipped: Sequence[tuple[str | int, str]],
        *,
        backbone=None,
        source: ImageSource | None = None,
        project=None,
    ) -> None:
        self.info = dict(info)
        self._project = (
            project  # what the scan reduced instead of the maps (explorer.dataset.local.Projection)
        )
        self.skipped = [tuple(item) for item in skipped]
        self._reduction = reduction.cpu()
        self._names = dict(names)
        self._backbone = backbone
        self._source = source

    # -- what it found -------------------------------------------------------------------------------------
    @property
    def stages(self) -> list[str]:
        """The scanned stages and layers, in scan order."""
        return list(self.info["stages"])

    @property
    def key(self) -> str | None:
        """The cache key, or None for a scan kept in memory."""
        return self.info.get("key")

    def __len__(self) -> int:
        return int(self.info["scanned"])

    def _stage(self, stage: str) -> StageReduction:
        if not isinstance(stage, str) or stage not in self._reduction.stages:
            raise LayerNotFoundError(
                f"This scan holds no stage or layer {shown(stage)}. Scanned: {', '.join(self.stages)}; "
                "scan again with out_features=[...] or layers=[...] to add it."
            )
        return self._reduction.stages[stage]

    def _channel(self, stage: str, channel: int) -> StageReduction:
        reduction = self._stage(stage)
        channels = reduction.values.shape[0]
        if (
            isinstance(channel, bool)
            or not isinstance(channel, (int, np.integer))
            or not 0 <= int(channel) < channels
        ):
            raise InvalidArgumentError(
                f"channel={shown(channel)}; {stage} has {channels} channels: pass an integer from 0 to "
                f"{channels - 1}."
            )
        return reduction

    def channels(self, stage: str) -> int:
        """The number of channels of a scanned stage or layer."""
        return int(self._stage(stage).values.shape[0])

    def top(self, stage: str, channel: int) -> list[Exemplar]:
        """The channel's exemplars, best first (fewer than ``k`` when fewer images were scanned).

        Example::

            >>> scan = explorer.scan("default", explorer.sample_dataset(16), out_indices=[2], k=4, cache=None, progress=False)
            >>> [round(e.value, 2) for e in scan.top("blocks.2", 17)]
            [25.46, 22.89, 22.59, 22.36]
        """
        reduction = self._channel(stage, channel)
        height, width = reduction.map_size
        side = self.info["fields"][stage]
        found = []
        for value, image, cell in zip(
            reduction.values[channel].tolist(),
            reduction.images[channel].tolist(),
            reduction.cells[channel].tolist(),
        ):
            if image == NO_IMAGE:
                break
            row_col = (cell // width, cell % width)
            box = cell_box(row_col, (height, width), tuple(self.info["input_size"]), side)
            found.append(Exemplar(self._names[image], image, float(value), row_col, box))
        return found

    def stats(self, stage: str) -> ChannelStats:
        """Per-channel statistics of the stage over every value of every scanned image (``per_image`` empty).

        Example::

            >>> scan = explorer.scan("default", explorer.sample_dataset(16), out_indices=[2], k=4, cache=None, progress=False)
            >>> scan.stats("blocks.2").top(3, by="sparsity").channels     # none is ever zero: ties by index
            array([0, 1, 2])
        """
        reduction = self._stage(stage)
        count, mean, m2, low, high, sumsq, zeros, positive, nonfinite = reduction.sums.T
        with np.errstate(invalid="ignore", divide="ignore"):
            empty = count == 0
            return ChannelStats(
                shape=(len(self), reduction.values.shape[0], *reduction.map_size),
                mean=np.where(empty, np.nan, mean),
                std=np.sqrt(m2 / count),
                min=np.where(empty, np.nan, low),
                max=np.where(empty, np.nan, high),
                l2=np.sqrt(sumsq),
                sparsity=zeros / count,
                positive=positive / count,
                nonfinite=nonfinite.round().astype(np.int64),
            )

    def histogram(self, stage: str, channel: int) -> Histogram:
        """The channel's values over the whole dataset in the scan's fixed bins (see
        :mod:`explorer.dataset.reduce`); values beyond the outer edges are counted in the end bins."""
        reduction = self._channel(stage, channel)
        nonfinite = int(round(float(reduction.sums[channel, -1])))
        return Histogram(reduction.histogram[channel].numpy().copy(), histogram_edges(), nonfinite=nonfinite)

    # -- crops ---------------------------------------------------------------------------------------------
    def backbone(self):
        """The backbone that was scanned: the live one, or the spec's weights reloaded and checked."""
        if self._backbone is None:
            from ..backbones import load_backbone

            if self.info["weights"] == "random":
                raise InvalidArgumentError(
                    "This scan ran on random weights, which cannot be reloaded. "
                    "Pass the backbone: Scan.load(path, backbone=bb)."
                )
            bb = load_backbone(self.info["spec"], pretrained=True)
            if weights_digest(bb.model) != self.info["weights_sha256"]:
                raise InvalidArgumentError(
                    f"The weights of {self.info['spec']!r} changed since this scan. "
                    "Pass the scanned backbone: Scan.load(path, backbone=bb), or scan again."
                )
            self._backbone = bb
        return self._backbone

    def _read(self, image: int) -> Image.Image:
        if self._source is not None:
            return self._source.read(image)
        name = self._names[image]
        if isinstance(name, int):
            raise InvalidArgumentError(
                "This scan's images came from a dataset; pass it to read crops: Scan.load(path, source=dataset)."
            )
        return open_source([name]).read(0)

    def exemplar_crops(
        self,
        stage: str,
        channels: Sequence[int],
        batch_size: int = 16,
        alpha: float = 0.5,
        cmap: str = OVERLAY_CMAP,
    ) -> Iterator[tuple[int, int, Image.Image]]:
        """``(channel, rank, crop)`` for every exemplar of ``channels``, one forward pass per batch of images.

        Each crop is the exemplar's receptive-field box cut from the image as the model saw it, with the channel
        overlaid (:func:`explorer.overlay`, on the range from the channel's dataset mean to its best value, so
        a channel's crops compare), in :data:`~explorer.render.OVERLAY_CMAP` by default (heat over a photo).
        """
        bb = self.backbone()
        means = self.stats(stage).mean
        tops = {channel: self.top(stage, channel) for channel in channels}
        jobs: dict[int, list[tuple[int, int, Exemplar]]] = {}
        for channel, top in tops.items():
            for rank, exemplar in enumerate(top):
                jobs.setdefault(exemplar.index, []).append((channel, rank, exemplar))
        images = sorted(jobs)
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            originals = [self._read(image) for image in chunk]
            views = [model_view(original, bb.preprocess) for original in originals]
            maps = bb.capture(bb.pixel_values(originals), [stage])
            if self._project is not None:
                maps = self._project(maps, torch.tensor(chunk, dtype=torch.int64))
            fmap = maps[stage]
            for position, image in enumerate(chunk):
                for channel, rank, exemplar in jobs[image]:
                    best = tops[channel][0].value
                    low = float(means[channel]) if np.isfinite(means[channel]) else best - 1.0
                    vrange = (min(low, best - 1e-6), best)
                    painted = overlay(
                        views[position], fmap[position, channel], alpha=alpha, cmap=cmap, vrange=vrange
                    )
                    yield channel, rank, Image.fromarray(painted).crop(exemplar.box)

    def crops(
        self, stage: str, channel: int, alpha: float = 0.5, cmap: str = OVERLAY_CMAP
    ) -> list[Image.Image]:
        """The channel's exemplar crops, best first, with the channel overlaid (see :meth:`exemplar_crops`).

        Example::

            >>> scan = explorer.scan("default", explorer.sample_dataset(16), out_indices=[2], k=4, cache=None, progress=False)
            >>> [crop.size for crop in scan.crops("blocks.2", 17)][:2]
            [(24, 40), (24, 24)]
        """
        self._channel(stage, channel)
        found = sorted(
            self.exemplar_crops(stage, [channel], alpha=alpha, cmap=cmap), key=lambda item: item[1]
        )
        return [crop for _, _, crop in found]

    # -- saving and loading ----------------------------------------------------------------------------------
    def _record(self) -> dict:
        return {
            "info": self.info,
            "skipped": [list(item) for item in self.skipped],
            "names": [[index, name] for index, name in sorted(self._names.items())],
        }

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``scan.json`` and ``scan.parquet`` into ``folder`` (created); returns the folder.

        ``scan.json`` carries a SHA-256 digest over everything saved (its own fields and the Parquet bytes), so
        :meth:`load` refuses a file edited by hand or damaged on the way.
        """
        folder = make_folder(as_path(folder, CacheError).expanduser(), CacheError)
        table = reduction_to_parquet(self._reduction)
        record = self._record()
        record["sha256"] = record_digest(record, table)
        write_atomic(folder / "scan.parquet", table, CacheError)
        write_atomic(folder / "scan.json", json.dumps(record, indent=1, allow_nan=False).encode(), CacheError)
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike, *, backbone=None, source=None, project=None) -> Scan:
        """Read a scan saved by :meth:`save`, :meth:`save_html` or the cache: a folder, or a cache key.

        Everything read is checked before it is used: the digest over the whole saved result, then the type
        and range of every field (:func:`~explorer.dataset.saved.check_record`); a received scan is data, never trusted.

        Args:
            path: a folder holding ``scan.json``, or a key in the default cache (``scan.key``).
            backbone: the scanned backbone, for crops of a scan on random weights; its weights must be the
                scanned ones.
            source: the scanned source, for crops of a dataset scan.
            project: the scan's projection, for crops of a projected scan (:func:`explorer.concepts`).

        Raises:
            CacheError: nothing is saved there, or the files are damaged or edited.
            InvalidArgumentError: ``backbone`` holds other weights than the scanned ones.

        Example::

            >>> folder = explorer.scan("default", explorer.sample_dataset(16), out_indices=[2], k=4, cache=None, progress=False).save("saved/")
            >>> round(explorer.Scan.load(folder).top("blocks.2", 17)[0].value, 2)
            25.46
        """
        folder = saved_folder(path)
        try:
            record = json.loads(read_small(folder / "scan.json"))
            table = (folder / "scan.parquet").read_bytes()
            if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
                raise ValueError("scan.json holds no digest")
            body = {key: record.get(key) for key in ("info", "skipped", "names")}
            if record_digest(body, table) != record["sha256"]:
                raise ValueError("scan.json and scan.parquet do not match the digest in scan.json")
            info, names, skipped = check_record(body)
            reduction = reduction_from_parquet(table, info["k"])
            check_reduction(info, reduction, names)
        except FileNotFoundError as err:
            raise CacheError(
                f"No saved scan at {shown(str(path))}. Pass a folder written by scan.save() or scan.save_html(), "
                "or a scan key."
            ) from err
        except DAMAGED as err:
            raise CacheError(
                f"The scan at {folder} is damaged ({shown(str(err))}). Run the scan again."
            ) from err
        if backbone is not None:
            from ..backbones import Backbone

            if not isinstance(backbone, Backbone):
                raise InvalidArgumentError(
                    f"backbone={shown(backbone)} ({type(backbone).__name__}); pass the scanned Backbone "
                    "(explorer.load_backbone(...))."
                )
            if weights_digest(backbone.model) != info["weights_sha256"]:
                raise InvalidArgumentError(
                    f"backbone= holds other weights than the ones this scan ran on ({info['spec']!r}, "
                    f"{info['weights']}); its crops would be drawn wrong. Pass the scanned backbone."
                )
        found = open_source(source) if source is not None else None
        return cls(info, reduction, names, skipped, backbone=backbone, source=found, project=project)

    def save_html(
        self,
        folder: str | os.PathLike,
        visualize: bool = False,
        *,
        vis_steps: int = 256,
        vis_size: int = 128,
        vis_method: str = "fft",
    ) -> Path:
        """A static report: ``index.html`` and one page per stage with every channel's exemplar crops, readable
        with no kernel; the scan itself is saved beside it, so ``Scan.load(folder)`` reads it back.

        Args:
            folder: where the report goes.
            visualize: also put each channel's optimised image (:func:`explorer.visualize`, seed 0) beside its
                exemplars, every channel of every stage (batched per stage): ``channels x vis_steps`` optimisation
                steps in all, so minutes on a CPU for a stage of hundreds of channels.
            vis_steps, vis_size, vis_method: the optimisation's steps, image side and method (``"fft"``,
                ``"maco"``).

        Returns:
            The path of ``index.html``.

        Example::

            >>> scan = explorer.scan("default", explorer.sample_dataset(16), out_indices=[0], k=2, cache=None, progress=False)
            >>> scan.save_html("report/", visualize=True, vis_steps=2, vis_size=32)
            PosixPath('report/index.html')
        """
        from ..vocabulary import VIS_METHODS
        from .report import write_report

        if not isinstance(visualize, bool):
            raise InvalidArgumentError(f"visualize={shown(visualize)}; pass True or False.")
        if not isinstance(vis_method, str) or vis_method not in VIS_METHODS:
            raise InvalidArgumentError(
                f"vis_method={shown(vis_method)}; choose one of: {', '.join(VIS_METHODS)}."
            )
        options = {
            "steps": whole("vis_steps", vis_steps, minimum=1, maximum=100_000),
            "size": whole("vis_size", vis_size, minimum=16, maximum=1024),
            "method": vis_method,
            "seed": 0,
        }
        return write_report(self, as_path(folder).expanduser(), options if visualize else None)

    def __repr__(self) -> str:
        stages = ", ".join(f"{name} ({self.channels(name)} ch)" for name in self.stages)
        return (
            f"Scan({self.info['spec']!r}, {len(self)} images, {len(self.skipped)} skipped, k={self.info['k']}, "
            f"stages: {stages})"
        )
