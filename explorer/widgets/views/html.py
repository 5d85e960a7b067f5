"""HTML pieces of the panel: the status line and the tables. Pure functions of data; no state, no torch.

Example::

    >>> html_table([{"name": "layer1", "channels": 64}])
    '<table class="explorer-table">...'
"""

from __future__ import annotations

import html
from collections.abc import Sequence

__all__ = ["STYLE", "html_table", "status_html", "format_bytes"]

STYLE = """
<style>
.explorer-table { border-collapse: collapse; font: 12px/1.4 var(--jp-code-font-family, monospace); }
.explorer-table th { text-align: left; border-bottom: 1px solid #999; padding: 2px 10px 2px 0; }
.explorer-table td { padding: 1px 10px 1px 0; white-space: nowrap; }
.explorer-pixels img, img.explorer-pixels { image-rendering: pixelated; }
.explorer-table tr.selected td { font-weight: bold; }
.explorer-status { padding: 4px 8px; border-radius: 4px; font: 13px/1.4 sans-serif; }
.explorer-status.ok { background: #eef6ee; color: #1d4d1d; }
.explorer-status.busy { background: #eef2fb; color: #1d2f5c; }
.explorer-status.warn { background: #fff4d6; color: #5c4400; }
.explorer-status.error { background: #fde8e8; color: #7a1010; }
.explorer-status b.random { color: #b00000; }
.explorer-status .explorer-error { margin-top: 2px; color: #7a1010; }
.explorer-refused input { border-color: #c00 !important; background: #fde8e8; }
.explorer-caption { font-size: 11px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.explorer-vis-caption { font-size: 11px; line-height: 1.35; white-space: normal; }
.explorer-vis-caption b.random { color: #b00000; }
</style>
"""


def format_bytes(count: int) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def html_table(
    rows: Sequence[dict],
    selected: Sequence[bool] | None = None,
    limit: int | None = None,
    channels: Sequence[int] | None = None,
) -> str:
    """An HTML table of dict rows (keys of the first row are the columns); ``selected`` rows are bold; each row
    carries its ``channels`` entry as ``data-channel`` (a click on it picks the channel)."""
    if not rows:
        return '<table class="explorer-table"><tr><td>(nothing to show)</td></tr></table>'
    shown = rows[:limit] if limit else rows
    columns = list(shown[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = []
    for i, row in enumerate(shown):
        css = ' class="selected"' if selected is not None and selected[i] else ""
        css += f' data-channel="{int(channels[i])}"' if channels is not None else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{_cell(row[c])}</td>" for c in columns) + "</tr>")
    more = (
        f"<tr><td colspan={len(columns)}>... {len(rows) - len(shown)} more rows</td></tr>"
        if limit and len(rows) > limit
        else ""
    )
    return f'<table class="explorer-table"><tr>{head}</tr>{"".join(body)}{more}</table>'


def status_html(kind: str, message: str, update: int = 0) -> str:
    """The status line: ``kind`` is ok, busy, warn or error; ``message`` is HTML; ``update`` counts the
    messages shown (a front end, or a browser test, can tell a new message from an equal one)."""
    return f'<div class="explorer-status {kind}" data-update="{update}">{message}</div>'
