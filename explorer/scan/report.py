"""The static HTML report of a scan: an index page and one page per stage, readable with no kernel.

Each stage page lists every channel: its dataset statistics (mean, std, max, sparsity), its histogram as a small
inline SVG, and its exemplars: the receptive-field crops with the channel overlaid, each captioned with its
value, map cell and source. Crops are PNG files beside the pages; the scan itself is saved in the same folder
(``scan.json``, ``scan.parquet``), so ``explorer.Scan.load(folder)`` reads it back.

Example::

    >>> index = scan.save_html("report/")
    >>> sorted(p.name for p in index.parent.glob("*.html"))
    ['blocks.2.html', 'index.html']
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

import numpy as np

from ..export import save_png

__all__ = ["write_report"]

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
figcaption {{ overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }}
svg {{ vertical-align: middle; }}
"""


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
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


def _stage_page(scan, stage: str, folder: Path) -> str:
    stem = _file_stem(stage)
    crops_folder = folder / stem
    crops_folder.mkdir(parents=True, exist_ok=True)
    channels = range(scan.channels(stage))
    files: dict[tuple[int, int], str] = {}
    for channel, rank, crop in scan.exemplar_crops(stage, list(channels)):
        name = f"c{channel:04d}_{rank:02d}.png"
        save_png(np.asarray(crop), crops_folder / name)
        files[channel, rank] = f"{stem}/{name}"
    stats = scan.stats(stage)
    sections = []
    for channel in channels:
        figures = []
        for rank, exemplar in enumerate(scan.top(stage, channel)):
            source = (
                os.path.basename(str(exemplar.source))
                if isinstance(exemplar.source, str)
                else exemplar.source
            )
            caption = f"{exemplar.value:.3g} @ {exemplar.cell[0]},{exemplar.cell[1]} · {source}"
            figures.append(
                f'<figure><img src="{html.escape(files[channel, rank])}" alt="exemplar {rank + 1}" '
                f'title="{html.escape(str(exemplar.source))}"><figcaption>{html.escape(caption)}</figcaption></figure>'
            )
        numbers = (
            f"mean {stats.mean[channel]:.3g} · std {stats.std[channel]:.3g} · max {stats.max[channel]:.3g} · "
            f"sparsity {stats.sparsity[channel]:.1%}"
        )
        sections.append(
            f'<div class="channel" id="c{channel}"><h2>channel {channel}</h2>'
            f'<div class="stats">{html.escape(numbers)} {_sparkline(scan.histogram(stage, channel).counts)}</div>'
            f'<div class="row">{"".join(figures)}</div></div>'
        )
    info = scan.info
    head = (
        f'<p><a href="index.html">all stages</a></p><h1>{html.escape(stage)} · {html.escape(str(info["spec"]))}</h1>'
        f"<p>{len(scan)} images, top {info['k']} per channel by spatial maximum; crops show the receptive field "
        f"({info['fields'][stage]} px square of the {info['input_size'][1]}x{info['input_size'][0]} model input) "
        "with the channel overlaid, from its dataset mean (dark) to its best value (bright).</p>"
    )
    return _page(f"{stage} · {info['spec']}", head + "\n".join(sections))


def write_report(scan, folder: Path) -> Path:
    """Write the report of ``scan`` into ``folder``; returns the path of ``index.html``."""
    scan.save(folder)
    rows = []
    for stage in scan.stages:
        page = f"{_file_stem(stage)}.html"
        (folder / page).write_text(_stage_page(scan, stage, folder), encoding="utf-8")
        height, width = scan.stats(stage).shape[2:]
        rows.append(
            f'<tr><td><a href="{html.escape(page)}">{html.escape(stage)}</a></td><td>{scan.channels(stage)}</td>'
            f"<td>{height}x{width}</td><td>{scan.info['fields'][stage]} px</td></tr>"
        )
    info = scan.info
    skipped = "".join(
        f"<li>{html.escape(str(source))}: {html.escape(reason)}</li>" for source, reason in scan.skipped
    )
    body = (
        f"<h1>Scan of {html.escape(str(info['spec']))}</h1>"
        f"<p>weights: {html.escape(info['weights'])} · {len(scan)} of {info['images']} images scanned · "
        f"{len(scan.skipped)} skipped · k = {info['k']}</p>"
        "<table><tr><th>stage</th><th>channels</th><th>map</th><th>receptive field</th></tr>"
        + "".join(rows)
        + "</table>"
        + (f"<h2>Skipped images</h2><ul>{skipped}</ul>" if skipped else "")
    )
    index = folder / "index.html"
    index.write_text(_page(f"Scan of {info['spec']}", body), encoding="utf-8")
    return index
