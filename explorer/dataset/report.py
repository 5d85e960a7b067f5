"""The static HTML report of a scan: an index page and one page per stage, readable with no kernel.

Each stage page lists every channel: its dataset statistics (mean, std, max, sparsity), its histogram as a small
inline SVG, and its exemplars: the receptive-field crops with the channel overlaid, each captioned with its
value, map cell and source. With ``visualize=`` options, each channel's optimised image
(:func:`explorer.visualize`, channels batched per stage) stands first in its row, beside its exemplars. Crops are PNG files beside the pages; the scan itself is saved in the same folder
(``scan.json``, ``scan.parquet``), so ``explorer.Scan.load(folder)`` reads it back.

Example::

    >>> scan = explorer.scan("default", explorer.sample_dataset(16), out_indices=[0], k=2, cache=None, progress=False)
    >>> index = scan.save_html("report/")
    >>> sorted(p.name for p in index.parent.glob("*.html"))
    ['blocks.0.html', 'index.html']
"""

from __future__ import annotations

import html
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..export import save_png
from ..files import make_folder, write_atomic

__all__ = ["VIS_BATCH", "html_page", "write_report"]

_log = logging.getLogger(__name__)

VIS_BATCH = 32
"""Channels optimised in one batch for the report (a batch gives the images one run per channel gives)."""

CROP_DISPLAY = 112
"""Pixels each crop is shown at (the file keeps the crop's own size)."""

_STYLE = f"""
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 20px; }} h2 {{ font-size: 15px; margin: 18px 0 4px; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 2px 10px; text-align: left; border-bottom: 1px solid #ddd; }}
.channel {{ margin-bottom: 10px; }} .stats {{ color: #555; font-size: 12px; }}
.row {{ display: flex; flex-wrap: wrap; gap: 6px; align-items: flex-start; }}
figure {{ margin: 0; width: {CROP_DISPLAY}px; font-size: 11px; color: #444; }}
figure img {{ width: {CROP_DISPLAY}px; height: {CROP_DISPLAY}px; object-fit: contain; background: #eee; display: block; }}
figure.vis img {{ outline: 2px solid #4a7ab5; }}
figcaption {{ overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }}
svg {{ vertical-align: middle; }}
"""


def _e(value: object) -> str:
    """``value`` as text safe anywhere in the page (element text and quoted attributes)."""
    return html.escape(str(value), quote=True)


def html_page(title: str, body: str) -> str:
    """A whole report page: ``title`` escaped here, ``body`` already escaped HTML."""
    return (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def _file_stem(stage: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", stage)


def _sparkline(counts: np.ndarray, width: int = 160, height: int = 28) -> str:
    top = max(1, int(counts.max()))
    bar = width / len(counts)
    bars = "".join(
        f'<rect x="{i * bar:.1f}" y="{height - h:.1f}" width="{bar:.1f}" height="{h:.1f}"/>'
        for i, h in enumerate(np.sqrt(counts / top) * height)
        if h > 0
    )
    return (
        f'<svg width="{width}" height="{height}" fill="#4a7ab5" role="img" '
        f'aria-label="histogram (square-root scale)">{bars}</svg>'
    )


def _visuals(
    scan, stage: str, channels: range, folder: Path, stem: str, options: Mapping[str, object]
) -> dict[int, str]:
    """Each channel's optimised image, saved as PNG beside its crops: ``{channel: <figure> HTML}``."""
    from ..feature_vis import visualize

    backbone, figures = scan.backbone(), {}
    for start in range(0, len(channels), VIS_BATCH):
        chunk = list(channels[start : start + VIS_BATCH])
        _log.info("report: visualising %s channels %d-%d", stage, chunk[0], chunk[-1])
        for channel, result in zip(chunk, visualize(backbone, stage=stage, channel=chunk, **options)):
            name = f"c{channel:04d}_vis.png"
            save_png(np.asarray(result.image), folder / stem / name)
            caption = f"optimised · mean {result.activation:.3g}"
            what = (
                f"the image channel {channel} responds to most: {result.method}, {len(result.history)} steps, "
                f"seed {result.seed}; its mean activation on it {result.activation:.3g}"
            )
            figures[channel] = (
                f'<figure class="vis"><img src="{_e(stem)}/{_e(name)}" alt="{_e(what)}" title="{_e(what)}">'
                f"<figcaption>{_e(caption)}</figcaption></figure>"
            )
    return figures


def _stage_page(scan, stage: str, folder: Path, visualize: Mapping[str, object] | None = None) -> str:
    stem = _file_stem(stage)
    crops_folder = folder / stem
    make_folder(crops_folder)
    channels = range(scan.channels(stage))
    visuals = _visuals(scan, stage, channels, folder, stem, visualize) if visualize is not None else {}
    files: dict[tuple[int, int], str] = {}
    for channel, rank, crop in scan.exemplar_crops(stage, list(channels)):
        name = f"c{channel:04d}_{rank:02d}.png"
        save_png(np.asarray(crop), crops_folder / name)  # atomic, never through a planted link
        files[channel, rank] = f"{stem}/{name}"
    stats = scan.stats(stage)
    sections = []
    for channel in channels:
        figures = [visuals[channel]] if channel in visuals else []
        for rank, exemplar in enumerate(scan.top(stage, channel)):
            source = (
                os.path.basename(str(exemplar.source))
                if isinstance(exemplar.source, str)
                else exemplar.source
            )
            caption = f"{exemplar.value:.3g} @ {exemplar.cell[0]},{exemplar.cell[1]} · {source}"
            figures.append(
                f'<figure><img src="{_e(files[channel, rank])}" alt="exemplar {_e(rank + 1)}" '
                f'title="{_e(exemplar.source)}"><figcaption>{_e(caption)}</figcaption></figure>'
            )
        numbers = (
            f"mean {stats.mean[channel]:.3g} · std {stats.std[channel]:.3g} · max {stats.max[channel]:.3g} · "
            f"sparsity {stats.sparsity[channel]:.1%}"
        )
        sections.append(
            f'<div class="channel" id="c{_e(channel)}"><h2>channel {_e(channel)}</h2>'
            f'<div class="stats">{_e(numbers)} {_sparkline(scan.histogram(stage, channel).counts)}</div>'
            f'<div class="row">{"".join(figures)}</div></div>'
        )
    info = scan.info
    head = (
        f'<p><a href="index.html">all stages</a></p><h1>{_e(stage)} · {_e(info["spec"])}</h1>'
        f"<p>{_e(len(scan))} images, top {_e(info['k'])} per channel by spatial maximum; crops show the receptive "
        f"field ({_e(info['fields'][stage])} px square of the {_e(info['input_size'][1])}x"
        f"{_e(info['input_size'][0])} model input) "
        "with the channel overlaid, from its dataset mean (dark) to its best value (bright).</p>"
    )
    if visuals:
        head += (
            "<p>The outlined picture first in each row is the image the channel responds to most, found by "
            "optimisation (explorer.visualize): it drives the channel hard, it is not what the channel means; "
            "read it beside the exemplars."
            + (
                " <b>Random weights: these pictures mean nothing</b> (only the architecture's biases)."
                if info["weights"] == "random"
                else ""
            )
            + "</p>"
        )
    return html_page(f"{stage} · {info['spec']}", head + "\n".join(sections))


def write_report(scan, folder: Path, visualize: Mapping[str, object] | None = None) -> Path:
    """Write the report of ``scan`` into ``folder``; returns the path of ``index.html``. ``visualize``: the
    :func:`explorer.visualize` options (steps, size, method, seed) of every channel's optimised image, or None for
    none."""
    scan.save(folder)
    rows = []
    for stage in scan.stages:
        page = f"{_file_stem(stage)}.html"
        write_atomic(folder / page, _stage_page(scan, stage, folder, visualize).encode())
        height, width = scan.stats(stage).shape[2:]
        rows.append(
            f'<tr><td><a href="{_e(page)}">{_e(stage)}</a></td><td>{_e(scan.channels(stage))}</td>'
            f"<td>{_e(height)}x{_e(width)}</td><td>{_e(scan.info['fields'][stage])} px</td></tr>"
        )
    info = scan.info
    skipped = "".join(f"<li>{_e(source)}: {_e(reason)}</li>" for source, reason in scan.skipped)
    body = (
        f"<h1>Scan of {_e(info['spec'])}</h1>"
        f"<p>weights: {_e(info['weights'])} · {_e(len(scan))} of {_e(info['images'])} images scanned · "
        f"{_e(len(scan.skipped))} skipped · k = {_e(info['k'])}</p>"
        "<table><tr><th>stage</th><th>channels</th><th>map</th><th>receptive field</th></tr>"
        + "".join(rows)
        + "</table>"
        + (f"<h2>Skipped images</h2><ul>{skipped}</ul>" if skipped else "")
    )
    index = folder / "index.html"
    return write_atomic(index, html_page(f"Scan of {info['spec']}", body).encode())
