"""Results to files: ``results.json`` (every sample), ``RESULTS.md`` (tables, ratios, targets) and ``results.png``.

Ratios are between medians measured in the same process, interleaved; they are what to compare across
machines. Absolute milliseconds depend on the machine, which the report names.

Example::

    >>> results = {"environment": environment("cpu", 2, "python -m benchmarks"), "render": rows}
    >>> results["targets"] = evaluate_targets(results)
    >>> write_all(results, Path("benchmarks"))
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from matplotlib.ticker import FuncFormatter

from . import suites as S

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "append_children",
    "environment",
    "evaluate_targets",
    "write_all",
    "write_json",
    "write_markdown",
    "write_plot",
]

PACKAGES = (
    "torch",
    "timm",
    "transformers",
    "torchlens",
    "torchvision",
    "explorer",
    "numpy",
    "matplotlib",
    "pillow",
)
ALL_STAGE_PEERS = (S.HOOKS, S.TV_FX, S.TIMM_ALL, S.TL_RECORD, S.TL_TRACE)
TARGET_OVERHEAD, TARGET_HF, TARGET_TORCHLENS = 1.05, 0.5, 5.0
TARGET_MPL, TARGET_RENDER_MS, TARGET_PANEL_MS = 30.0, 30.0, 50.0
DISPLAY_EVENTS = ("colour map (display only)", "normalisation (display only)", "channel page (display only)")


# ----------------------------------------------------------------------------------------------- environment


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_revision() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "explorer"], cwd=root, capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    if commit.returncode != 0:
        return "unknown"
    return commit.stdout.strip() + (" (explorer/ has uncommitted changes)" if dirty.stdout.strip() else "")


def environment(device: str, threads: int, command: str) -> dict:
    """The machine, versions, date and command of this run."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        physical = None
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "device": device,
        "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
        "cpu": _cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_physical": physical,
        "torch_threads": threads,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "explorer_revision": _git_revision(),
        "load_average": [round(v, 2) for v in os.getloadavg()],  # 1, 5 and 15 min: how busy the machine was
        "versions": versions,
    }


# ----------------------------------------------------------------------------------------------- numbers


def _median(row: dict, name: str) -> float | None:
    entry = row.get("methods", row.get("events", {})).get(name)
    return entry["median_ms"] if entry and entry["n"] else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _x(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}x"


def _ms(entry: dict | None) -> str:
    if not entry or not entry["n"]:
        return "n/a"
    median, iqr = entry["median_ms"], entry["iqr_ms"]
    digits = 0 if median >= 1000 else 1
    return f"{median:,.{digits}f} ({iqr:,.{digits}f})"


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.0f}"


def _verdict(met: bool | None) -> str:
    return {True: "**met**", False: "**not met**", None: "not measured"}[met]


def _geomean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _torchlens_fastest(row: dict) -> float | None:
    times = [t for t in (_median(row, S.TL_RECORD), _median(row, S.TL_TRACE)) if t is not None]
    return min(times) if times else None


# ----------------------------------------------------------------------------------------------- targets


def _target(
    name: str,
    values: list[tuple[str, float]],
    ok: Callable[[float], bool],
    unit: str,
    note: str,
    fmt: Callable[[float], str] = _x,
) -> dict:
    """One target: the measured values, met when ``ok`` holds for every one, and the note where it does not."""
    if not values:
        return {"target": name, "measured": "not measured", "met": None, "note": "", "checks": []}
    failed = [label for label, value in values if not ok(value)]
    measured = "; ".join(f"{label}: {fmt(value)}" for label, value in values)
    met = not failed
    detail = "" if met else f"Not met for {', '.join(failed)}. {note}"
    return {
        "target": name,
        "measured": measured,
        "met": met,
        "note": detail,
        "unit": unit,
        "checks": [bool(ok(value)) for _, value in values],
    }


def evaluate_targets(results: dict) -> list[dict]:
    """Each target of the issue as met / not met with the measured figures, and a reason where not met."""
    capture = results.get("capture") or []
    render = results.get("render") or []
    panel = results.get("panel") or {}
    targets = []

    overhead = [
        (f"{r['model']} b{r['batch']}", _ratio(_median(r, S.OURS_ALL), _median(r, S.BARE))) for r in capture
    ]
    overhead = [(label, v) for label, v in overhead if v is not None]
    noise = [
        f"{r['model']} b{r['batch']}: bare IQR {100 * r['methods'][S.BARE]['iqr_ms'] / r['methods'][S.BARE]['median_ms']:.0f}% "
        f"of its median, plain hooks / bare {_x(_ratio(_median(r, S.HOOKS), _median(r, S.BARE)))}"
        for r in capture
        if S.BARE in r["methods"]
        and (_ratio(_median(r, S.OURS_ALL), _median(r, S.BARE)) or 0) > TARGET_OVERHEAD
    ]
    all_stages = _target(
        f"All-stage capture <= {TARGET_OVERHEAD}x the bare forward",
        overhead,
        lambda v: v <= TARGET_OVERHEAD,
        "x",
        "Capture adds one hook per stage and stops after the last one; set the ratio against the spread of the "
        f"bare forward itself and against plain hooks on the same run ({'; '.join(noise)}).",
    )
    if overhead:
        all_stages["measured"] = (
            f"geometric mean {_x(_geomean([v for _, v in overhead]))}; " + all_stages["measured"]
        )
    targets.append(all_stages)
    hf = [
        (f"resnet50 b{r['batch']}", _ratio(_median(r, S.OURS_FIRST), _median(r, S.HF_FIRST)))
        for r in capture
        if r["model"] == "resnet50"
    ]
    targets.append(
        _target(
            f"First-stage capture <= {TARGET_HF}x transformers' ResNetBackbone (resnet50)",
            [(label, v) for label, v in hf if v is not None],
            lambda v: v <= TARGET_HF,
            "x",
            "transformers runs every stage; explorer stops after stage 1.",
        )
    )
    torchlens = [
        (f"{r['model']} b{r['batch']}", _ratio(_torchlens_fastest(r), _median(r, S.OURS_ALL)))
        for r in capture
    ]
    targets.append(
        _target(
            f">= {TARGET_TORCHLENS:g}x faster than TorchLens (its faster mode) for the same stages",
            [(label, v) for label, v in torchlens if v is not None],
            lambda v: v >= TARGET_TORCHLENS,
            "x",
            "TorchLens logs every tensor operation in Python; its cost per operation shrinks against the "
            "convolutions as the batch grows.",
            fmt=lambda v: _x(v, 1),
        )
    )
    big = next((r for r in render if r["shape"] == [256, 56, 56]), None)
    ours = _median(big, S.OURS_RENDER) if big else None
    grid = _median(big, S.OURS_GRID) if big else None
    single = _median(big, S.OURS_ONE_THREAD) if big else None
    speedup = _ratio(_median(big, S.MATPLOTLIB), ours) if big else None
    where = (
        f"render_grid alone takes {grid:.1f} ms of explorer's {ours:.1f} ms, PNG encoding the rest"
        if grid and ours
        else ""
    )
    if single:
        where += f"; with 1 torch thread instead of {results['environment']['torch_threads']} the whole call takes {single:.1f} ms"
    targets.append(
        _target(
            f"Render (256, 56, 56) to PNG >= {TARGET_MPL:g}x faster than matplotlib's subplot grid",
            [("speed-up", speedup)] if speedup else [],
            lambda v: v >= TARGET_MPL,
            "x",
            f"{where}.",
            fmt=lambda v: _x(v, 0),
        )
    )
    targets.append(
        _target(
            f"Render (256, 56, 56) to PNG < {TARGET_RENDER_MS:g} ms",
            [("median", ours)] if ours else [],
            lambda v: v < TARGET_RENDER_MS,
            "ms",
            f"{where}.",
            fmt=lambda v: f"{v:.1f} ms",
        )
    )
    display = [(kind.split(" (")[0], _median(panel, kind)) for kind in DISPLAY_EVENTS]
    profile = ", ".join(f"{p['function']} {p['ms_per_change']:.0f} ms" for p in panel.get("profile", [])[:5])
    targets.append(
        _target(
            f"Panel display-only change < {TARGET_PANEL_MS:g} ms to new bytes (default model)",
            [(label, v) for label, v in display if v is not None],
            lambda v: v < TARGET_PANEL_MS,
            "ms",
            f"Where a colour-map change spends its time (cProfile, cumulative per change): {profile}.",
            fmt=lambda v: f"{v:.0f} ms",
        )
    )
    return targets


# ----------------------------------------------------------------------------------------------- markdown


def _section(title: str, prose: str) -> list[str]:
    return [f"## {title}", "", prose, ""]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def _environment_lines(env: dict, elapsed_s: float | None, settings: dict) -> list[str]:
    versions = ", ".join(f"{name} {version}" for name, version in env["versions"].items())
    machine = f"{env['cpu']}, {env['cores_logical']} logical cores ({env['cores_physical']} physical), "
    machine += f"torch threads {env['torch_threads']}" + (f", GPU {env['gpu']}" if env.get("gpu") else "")
    lines = [
        f"- Command: `{env['command']}`",
        f"- Date: {env['date']}; the run took {elapsed_s / 60:.1f} min"
        if elapsed_s
        else f"- Date: {env['date']}",
        f"- Machine: {machine}; {env['platform']}, Python {env['python']}; load average at the start "
        f"{'/'.join(str(v) for v in env.get('load_average', []))} (1/5/15 min)",
        f"- Device: {env['device']}; explorer revision {env['explorer_revision']}",
        f"- Versions: {versions}",
        f"- Repeats: {settings.get('name', '?')} settings ({settings.get('summary', '')}); every cell is the median "
        "of the timed calls, with the interquartile range in brackets.",
    ]
    return lines


def _capture_sections(capture: list[dict]) -> list[str]:
    out = _section(
        "1. All-stage capture against the bare forward",
        "`bb(x)` with every stage selected, against `model.forward_features(x)` on the same timm model "
        "(random init, 224x224, `torch.inference_mode`). The capture stops after the last stage, so models whose "
        "`forward_features` does work after it (ViT's final norm, EfficientNet's head conv) can come out below 1x.",
    )
    rows = [
        [
            r["model"],
            r["batch"],
            len(r["stages"]),
            _ms(r["methods"].get(S.BARE)),
            _ms(r["methods"].get(S.OURS_ALL)),
            _x(_ratio(_median(r, S.OURS_ALL), _median(r, S.BARE))),
        ]
        for r in capture
    ]
    out += _table(["model", "batch", "stages", "bare ms (IQR)", "explorer ms (IQR)", "explorer / bare"], rows)
    out += [""] + _section(
        "2. First stage only",
        "The first stage after the stem: resnet50 `layer1` (index 1, the map transformers calls `stage1`; "
        "index 0 is the stem's activation `act1`), and index 0 for the others (`stages.0`, `blocks.0`, "
        "`blocks.0`, `layers.0`). Ratios are explorer's median over the other's (below 1: explorer is faster). "
        "transformers' `ResNetBackbone(ResNetConfig(resnet-50 sizes, out_indices=[1]))` runs for resnet50 only.",
    )
    rows = []
    for r in capture:
        ours = _median(r, S.OURS_FIRST)
        rows.append(
            [
                r["model"],
                r["batch"],
                f"`{r['first_stage']}`",
                _ms(r["methods"].get(S.OURS_FIRST)),
                _x(_ratio(ours, _median(r, S.BARE))),
                _ms(r["methods"].get(S.TIMM_FIRST)),
                _x(_ratio(ours, _median(r, S.TIMM_FIRST))),
                _ms(r["methods"].get(S.HF_FIRST)),
                _x(_ratio(ours, _median(r, S.HF_FIRST))),
            ]
        )
    out += _table(
        [
            "model",
            "batch",
            "stage",
            "explorer ms",
            "vs bare",
            "timm features_only ms",
            "vs timm",
            "transformers ms",
            "vs transformers",
        ],
        rows,
    )
    out += [""] + _section(
        "3. Other extraction tools, all stages",
        "The same stage modules through each tool. Each cell: median ms (IQR), then the tool's median over "
        "explorer's (above 1: explorer is faster). Plain hooks run the whole `forward_features` with a hook per "
        "stage; torchvision's FX extractor is built once per model; timm `features_only` is its own model; TorchLens "
        "saves the modules on its own copy of the model and halts after the last one, with its global torch "
        "wrappers installed before and removed after each call, outside the timing.",
    )
    rows = []
    for r in capture:
        ours = _median(r, S.OURS_ALL)
        cells = [r["model"], r["batch"], _ms(r["methods"].get(S.OURS_ALL))]
        for peer in ALL_STAGE_PEERS:
            entry = r["methods"].get(peer)
            cells.append(
                f"{_ms(entry)}, {_x(_ratio(_median(r, peer), ours), 1)}"
                if entry
                else ("fails" if peer in r["unavailable"] else "not run")
            )
        rows.append(cells)
    out += _table(["model", "batch", "explorer ms", *ALL_STAGE_PEERS], rows)
    failures = sorted(
        {(peer, r["model"], reason) for r in capture for peer, reason in r["unavailable"].items()}
    )
    if failures:
        out += ["", "Where a tool could not run:", ""]
        out += [f"- {peer} on {model}: {reason}" for peer, model, reason in failures]
    return out


def _render_section(render: list[dict]) -> list[str]:
    out = _section(
        "4. Rendering a map to PNG bytes",
        "One image's map `(C, 56, 56)` (smooth rectified noise, per-channel min-max, viridis) to PNG bytes. explorer: "
        "`to_png(render_grid(fmap))` (level 1: ISA-L deflate when `isal` is installed, as it is with explorer); NumPy: min-max, a matplotlib colour table, tiles by reshape, "
        "PIL PNG at its default level 6 and at level 1; matplotlib: `Figure` + Agg, one `imshow` subplot per "
        "channel with the axis off, `savefig` PNG, each tile about the map's own size. Ratio: the method's median "
        "over explorer's.",
    )
    rows = []
    for r in render:
        ours = _median(r, S.OURS_RENDER)
        for name, entry in r["methods"].items():
            size = r["png_bytes"].get(name)
            rows.append(
                [
                    tuple(r["shape"]),
                    name,
                    _ms(entry),
                    _x(_ratio(_median(r, name), ours), 1),
                    f"{size / 1024:,.0f}" if size else "-",
                ]
            )
    return out + _table(["map", "method", "ms (IQR)", "vs explorer", "PNG KiB"], rows)


def _panel_section(panel: dict) -> list[str]:
    title = "5. The panel, driven headlessly"
    if not panel:
        return _section(title, "Not run.")
    out = _section(
        title,
        f"`explorer.Explorer(device=...)` on the default model (stage `{panel.get('default_stage')}`) with the sample "
        "images, repeated as distinct copies so that every image change is uncached. Each event is timed from "
        "setting the control's value to `app.grid_png` returning the new bytes (with no event loop the panel "
        "redraws synchronously). The page change runs on `blocks.1` (24 channels) with 16 channels a page, since "
        f"the default stage has only 16 channels. Opening the panel took {panel['open_ms']:,.0f} ms.",
    )
    rows = [
        [
            name,
            _ms(entry),
            entry["n"],
            "yes" if panel["changed"].get(name) else "NO",
            panel["model_runs"].get(name, 0),
        ]
        for name, entry in panel["events"].items()
    ]
    out += _table(["event", "ms to new bytes (IQR)", "n", "new bytes each time", "forward passes"], rows)
    if panel.get("profile"):
        out += ["", "Where a colour-map change spends its time (cProfile on, cumulative ms per change):", ""]
        out += _table(
            ["function", "ms"], [[p["function"], f"{p['ms_per_change']:.1f}"] for p in panel["profile"]]
        )
    return out


def _memory_section(memory: list[dict], device: str) -> list[str]:
    if device.startswith("cuda"):
        how = "`torch.cuda.max_memory_allocated` above what was allocated before the call"
    else:
        how = (
            "peak RSS during the call above RSS just before it, each in a fresh process after a batch-1 warm-up; "
            "the peak is the kernel's own high-water mark (`VmHWM`, reset through `/proc/self/clear_refs` just "
            "before the call), or a 1 ms psutil sample where it cannot be reset; `MALLOC_MMAP_THRESHOLD_=65536` "
            "makes glibc return freed tensors at once, so RSS follows live memory"
        )
    out = _section(
        "6. Peak memory, all stages at batch 8",
        f"Method: {how}. Retained: memory still held while the returned maps are kept.",
    )
    rows = []
    for r in memory:
        bare, ours = r.get("bare", {}), r.get("explorer", {})
        rows.append(
            [
                r["model"],
                r["batch"],
                _mb(bare.get("peak_bytes")) if "error" not in bare else bare["error"],
                _mb(ours.get("peak_bytes")) if "error" not in ours else ours["error"],
                _x(_ratio(ours.get("peak_bytes"), bare.get("peak_bytes"))),
                _mb(ours.get("retained_bytes")),
                _mb(ours.get("maps_bytes")),
                ours.get("method", "-"),
            ]
        )
    return out + _table(
        [
            "model",
            "batch",
            "bare peak MiB",
            "explorer peak MiB",
            "explorer / bare",
            "explorer retained MiB",
            "maps MiB",
            "explorer peak read by",
        ],
        rows,
    )


def write_markdown(results: dict, path: Path) -> None:
    """``RESULTS.md``: environment, targets, then one section per suite."""
    env = results["environment"]
    lines = ["# Benchmarks: explorer against the tools people use today", ""]
    lines += _environment_lines(env, results.get("elapsed_s"), results.get("settings", {}))
    if results.get("quick"):
        lines += [
            "",
            "**Quick run** (`--quick`): few repeats, a smoke test of the suite; do not quote these figures.",
        ]
    lines += ["", "## Targets", ""]
    lines += _table(
        ["target", "measured", "verdict", "why not met"],
        [[t["target"], t["measured"], _verdict(t["met"]), t["note"]] for t in results.get("targets", [])],
    )
    if results.get("capture"):
        lines += [""] + _capture_sections(results["capture"])
    if results.get("render"):
        lines += [""] + _render_section(results["render"])
    if "panel" in results:
        lines += [""] + _panel_section(results.get("panel") or {})
    if results.get("memory"):
        lines += [""] + _memory_section(results["memory"], env["device"])
    if results.get("errors"):
        lines += ["", "## Suites that failed", ""]
        lines += [f"- {suite}: {message}" for suite, message in results["errors"].items()]
    path.write_text("\n".join(lines) + "\n")


def write_json(results: dict, path: Path) -> None:
    """``results.json``: everything, with every timed sample."""
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")


# ----------------------------------------------------------------------------------------------- plot


def _bars(ax: Axes, groups: Sequence[str], series: dict[str, list[float | None]], log: bool = True) -> None:
    if not groups:
        ax.set_axis_off()
        return
    width = 0.8 / max(1, len(series))
    for k, (name, values) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(groups))]
        heights = [v if v is not None else 0.0 for v in values]
        ax.bar(xs, heights, width, label=name)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=20, ha="right", fontsize=7)
    if log:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.tick_params(axis="y", which="minor", labelsize=6)
    ax.legend(fontsize=6)


def _short(model: str) -> str:
    return model.split("_patch")[0].replace("tf_efficientnet_", "effnet_")


def write_plot(results: dict, path: Path) -> None:
    """``results.png``: capture ratios, first stage, rendering, panel latency and memory (matplotlib, Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(16, 9), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 3)
    capture = results.get("capture") or []
    for ax, batch in zip(axes[0, :2], (1, 8)):
        rows = [r for r in capture if r["batch"] == batch]
        series = {
            name: [_ratio(_median(r, name), _median(r, S.BARE)) for r in rows]
            for name in (S.OURS_ALL, *ALL_STAGE_PEERS)
        }
        _bars(ax, [_short(r["model"]) for r in rows], series)
        ax.axhline(TARGET_OVERHEAD, color="black", lw=0.8, ls="--")
        ax.set_title(f"All stages, batch {batch}: time / bare forward (log)", fontsize=9)
    rows = [r for r in capture if r["batch"] == 1]
    series = {
        name: [_ratio(_median(r, name), _median(r, S.BARE)) for r in rows]
        for name in (S.OURS_FIRST, S.TIMM_FIRST, S.HF_FIRST)
    }
    _bars(axes[0, 2], [_short(r["model"]) for r in rows], series, log=False)
    axes[0, 2].axhline(1.0, color="black", lw=0.8, ls="--")
    axes[0, 2].set_title("First stage, batch 1: time / bare forward", fontsize=9)

    render = results.get("render") or []
    names = list(render[0]["methods"]) if render else []
    _bars(
        axes[1, 0],
        [n.replace(": ", ":\n") for n in names],
        {str(tuple(r["shape"])): [_median(r, n) for n in names] for r in render},
    )
    axes[1, 0].axhline(TARGET_RENDER_MS, color="black", lw=0.8, ls="--")
    axes[1, 0].set_title("Map to PNG bytes, ms (log)", fontsize=9)

    panel = results.get("panel") or {}
    events = list(panel.get("events", {}))
    if events:
        axes[1, 1].barh(events, [_median(panel, e) or 0.0 for e in events], color="tab:green")
        axes[1, 1].set_xscale("log")
        axes[1, 1].xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes[1, 1].axvline(TARGET_PANEL_MS, color="black", lw=0.8, ls="--")
        axes[1, 1].tick_params(axis="y", labelsize=7)
    else:
        axes[1, 1].set_axis_off()
    axes[1, 1].set_title("Panel: ms to new image bytes (log)", fontsize=9)

    memory = results.get("memory") or []
    _bars(
        axes[1, 2],
        [_short(r["model"]) for r in memory],
        {m: [(r.get(m, {}).get("peak_bytes") or 0) / 2**20 for r in memory] for m in ("bare", "explorer")},
        log=False,
    )
    axes[1, 2].set_title("Peak memory above start, batch 8, MiB", fontsize=9)
    env = results["environment"]
    figure.suptitle(
        f"explorer benchmarks · {env['cpu']} · {env['device']} · {env['torch_threads']} threads · {env['date']}"
    )
    figure.savefig(path, dpi=100)


def write_all(results: dict, out: Path) -> list[Path]:
    """Write ``results.json``, ``RESULTS.md`` and ``results.png`` into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.json", out / "RESULTS.md", out / "results.png"]
    write_json(results, paths[0])
    write_markdown(results, paths[1])
    write_plot(results, paths[2])
    return paths


CHILD_FILES = {
    "cam": "CAM_RESULTS.md",
    "scan": "SCAN_RESULTS.md",
    "concepts": "CONCEPTS_RESULTS.md",
    "browser": 'the section "Panel in the browser" above',
}


def append_children(runs: list[dict], path: Path) -> None:
    """Add the standalone benchmarks of this run to ``RESULTS.md``: each one's command, exit status, duration,
    and where its figures are (its own file, or its printed tables, quoted here as printed)."""
    lines = ["", "## The other benchmarks of this run", ""]
    lines += _table(
        ["benchmark", "command", "exit status", "minutes", "figures"],
        [
            [
                run["name"],
                f"`{run['command']}`",
                str(run["status"]),
                f"{run['seconds'] / 60:.1f}",
                CHILD_FILES.get(run["name"], "printed below"),
            ]
            for run in runs
        ],
    )
    for run in runs:
        if run["name"] in CHILD_FILES and run["status"] == 0:
            continue
        lines += ["", f"### {run['name']}", "", "```", run["output"].strip() or "(no output)", "```"]
    path.write_text(path.read_text().rstrip("\n") + "\n" + "\n".join(lines) + "\n")
