"""``python -m benchmarks.summary``: the README's table of targets, built from the results files of one run.

Every row reads the JSON results that ``python -m benchmarks`` writes (``results.json``, ``cam_results.json``,
``scan_results.json``, ``patch_views.json``, ``feature_vis.json``, ``concepts_results.json``, ``browser.json``)
and nothing else, so no figure is typed by hand. The files must carry one revision: a folder that mixes runs is
refused. The table replaces what stands between the two marker comments of README.md; ``--check`` only says
whether README.md already holds it (the test suite runs that check, so README and results cannot drift apart).

Options::

    --results DIR   the folder of results files (default: this folder)
    --readme FILE   the README to update (default: the repository's)
    --check         exit 1 when the README's table differs from the one the results give
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from . import report

__all__ = ["START", "END", "table", "update_readme"]

HERE = Path(__file__).resolve().parent
START = "<!-- benchmark table: written by python -m benchmarks.summary; do not edit by hand -->"
END = "<!-- end of benchmark table -->"
FILES = {
    "core": "results.json",
    "cam": "cam_results.json",
    "scan": "scan_results.json",
    "patch_views": "patch_views.json",
    "feature_vis": "feature_vis.json",
    "concepts": "concepts_results.json",
    "browser": "browser.json",
}
BROWSER_RUN = "this run"


class MixedRunsError(ValueError):
    """The results files do not come from one run (different revisions), or one is missing."""


def _revision(stamp: str) -> str:
    return stamp.split(" ", 1)[0]


def load(folder: Path) -> dict[str, dict]:
    """Every results file of ``folder``, checked to come from one revision."""
    results, revisions = {}, {}
    for name, filename in FILES.items():
        path = folder / filename
        if not path.exists():
            raise MixedRunsError(f"{path} is missing: run `python -m benchmarks --out {folder}`")
        data = json.loads(path.read_text())
        if name == "browser":
            data = data[BROWSER_RUN]
            revisions[name] = data["revision"]
        else:
            revisions[name] = _revision(data["environment"]["explorer_revision"])
        results[name] = data
    if len(set(revisions.values())) != 1:
        raise MixedRunsError(f"the results files come from different revisions: {revisions}")
    return results


def _verdict(checks: list[bool]) -> str:
    if all(checks):
        return "met"
    if not any(checks):
        return "not met"
    return f"{sum(checks)} of {len(checks)}"


def _row(target: str, measured: str, checks: list[bool]) -> list[str]:
    return [target, measured, _verdict(checks) if checks else "not measured"]


def _ms(value: float) -> str:
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _span(values: list[float], fmt: Callable[[float], str] = lambda v: f"{v:.2f}x") -> str:
    low, high = min(values), max(values)
    return fmt(low) if fmt(low) == fmt(high) else f"{fmt(low)}-{fmt(high)}"


def _core_rows(core: dict) -> list[list[str]]:
    """The core suite's targets, as :func:`report.evaluate_targets` words them for RESULTS.md."""
    return [_row(t["target"], t["measured"], t["checks"]) for t in report.evaluate_targets(core)]


def _cam_rows(cam: dict) -> list[list[str]]:
    rows = cam["timing"]
    floor = [r["explorer_vs_floor"] for r in rows]
    by_hand = [r["explorer_vs_by_hand"] for r in rows]
    leaks = cam["leaks"]
    models = ", ".join(r["model"] for r in rows)
    return [
        _row(
            "CAM <= 1.2x one forward + backward to the stage; at least as fast as grad-cam by hand",
            f"{_span(floor)}; {_span(by_hand)} of grad-cam by hand ({models}); {leaks['calls']:,} calls leave "
            f"{leaks['hooks_after']} hooks",
            [v <= 1.2 for v in floor] + [v <= 1.0 for v in by_hand] + [leaks["hooks_after"] == 0],
        )
    ]


def _scan_rows(scan: dict) -> list[list[str]]:
    ratios = [r["ratio"] for r in scan["throughput"]]
    small, large = sorted(scan["memory"], key=lambda r: r["images"])
    growth = large["peak_rss_bytes"] / small["peak_rss_bytes"]
    ray = scan["ray"]
    models = ", ".join(f"{r['model']} `{r['stages'][0]}`" for r in scan["throughput"])
    return [
        _row(
            "scan >= 0.9x a plain DataLoader + forward loop",
            f"{_span(ratios)} ({models}; {scan['throughput'][0]['images']} images)",
            [v >= 0.9 for v in ratios],
        ),
        _row(
            "scan memory flat in the number of images (peak RSS within 1.1x)",
            f"{large['images']:,} against {small['images']:,} images: {growth:.3f}x",
            [growth <= 1.1],
        ),
        _row(
            "scan: a killed scan resumes from its shards; Ray gives the local answer",
            f"{scan['resume']['extra_shards']:.1f} shards of extra work after a kill; Ray "
            f"{ray['ratio']:.1f}x the local time on {ray['images']} images (actor start-up included); the same "
            f"exemplars: {ray['same_exemplars']}, values within {ray['largest_relative_difference']:.0e} "
            f"(identical: {ray['identical']})",
            [
                scan["resume"]["extra_shards"] <= 2,
                ray["same_exemplars"],
                ray["largest_relative_difference"] < 1e-5,
            ],
        ),
    ]


def _patch_view_rows(patch_views: dict) -> list[list[str]]:
    captured, panel = patch_views["captured_ms"], patch_views["panel_ms"]
    ratios = {
        spec.split("_patch")[0]: timings["attention + rollout"] / timings["forward (fused attention)"]
        for spec, timings in patch_views["attention"].items()
    }
    return [
        _row(
            "PCA of a cached (8, 768, 32, 32) capture < 50 ms kernel-side",
            f"joint fit {_ms(captured['pca (joint fit)'])}, reusing a fit {_ms(captured['pca fit=basis'])}, "
            f"similarity {_ms(captured['similarity'])}, a similarity click drawn {_ms(panel['similarity click'])}",
            [captured["pca (joint fit)"] < 50],
        ),
        _row(
            "attention with rollout <= 1.1x one forward",
            ", ".join(f"{name} {ratio:.2f}x" for name, ratio in ratios.items()),
            [ratio <= 1.1 for ratio in ratios.values()],
        ),
    ]


def _feature_vis_rows(feature_vis: dict) -> list[list[str]]:
    rows = {
        name.split(" ")[0] + " `" + name.split(" ")[1] + "`": row for name, row in feature_vis["rows"].items()
    }
    steps = {name: row["fft_over_floor"] for name, row in rows.items()}
    return [
        _row(
            "feature visualisation: a step <= 1.3x one forward + backward (the floor)",
            ", ".join(f"{name} {ratio:.2f}x" for name, ratio in steps.items())
            + "; 512 steps at 224 px: "
            + ", ".join(f"{name.split(' ')[0]} {row['fft_512_steps_s']:.0f} s" for name, row in rows.items()),
            [ratio <= 1.3 for ratio in steps.values()],
        ),
        _row(
            "feature visualisation: a batch of 16 channels >= 4x faster than 16 runs",
            ", ".join(
                f"{name.split(' ')[0]} {row['batch_speedup']:.2f}x (batching the passes could give "
                f"{row['batch_ceiling']:.2f}x on this device: 16 x floor / floor at batch 16)"
                for name, row in rows.items()
            ),
            [row["batch_speedup"] >= 4 for row in rows.values()],
        ),
    ]


def _concepts_rows(concepts: dict) -> list[list[str]]:
    fits = [r["wall_s"] for r in concepts["fit"]]
    small, large = sorted(concepts["memory"], key=lambda r: r["images"])
    growth = large["peak_rss_bytes"] / small["peak_rss_bytes"]
    ratio = concepts["pass2"]["ratio"]
    return [
        _row(
            "concepts: pass 2 >= 0.9x the scan; a fit of 100k x 320 < 1 min; memory flat (within 1.1x)",
            f"{ratio:.2f}x; {_span(fits, lambda v: f'{v:.1f} s')} "
            f"({', '.join(r['method'] for r in concepts['fit'])}); {large['images']:,} against "
            f"{small['images']:,} images {growth:.3f}x",
            [ratio >= 0.9] + [v < 60 for v in fits] + [growth <= 1.1],
        )
    ]


def _browser_rows(browser: dict) -> list[list[str]]:
    changes = browser["changes"]
    display = {
        name: changes[name]["settled_ms"] for name in ("colour map", "normalisation", "page", "zoom channel")
    }
    opening = browser["opening"]
    large = browser["large_model"]
    patches = browser["patches"]
    stage, new, upload = (changes[name]["settled_ms"] for name in ("stage (captured)", "new image", "upload"))
    return [
        _row(
            "panel in the browser: a display-only change settled < 100 ms",
            ", ".join(f"{name} {_ms(value)}" for name, value in display.items()),
            [value < 100 for value in display.values()],
        ),
        _row(
            "browser: a captured stage < 150 ms, a new image and an upload < 400 ms, opening < 1.5 MB",
            f"{_ms(stage)}; new image {_ms(new)}, upload {_ms(upload)}; {opening['bytes_in'] / 1e6:.2f} MB",
            [stage < 150, new < 400, upload < 400, opening["bytes_in"] < 1.5e6],
        ),
        _row(
            "browser: panel visible < 1 s after Run",
            f"{opening['visible_s']:.2f} s (first grid {opening['first_grid_s']:.1f} s, once torch and timm "
            "have imported)",
            [opening["visible_s"] < 1],
        ),
        _row(
            "browser: a similarity click (Patches tab) settled < 100 ms",
            f"{_ms(patches['click_settled_ms'])} (first image drawn {_ms(patches['click_first_ms'])})",
            [patches["click_settled_ms"] < 100],
        ),
        _row(
            "live camera >= 10 pictures/s drawn in the browser (default model)",
            ", ".join(f"{mode} {fps:.1f}" for mode, fps in patches["camera_fps"].items()) + " pictures/s",
            [fps >= 10 for fps in patches["camera_fps"].values()],
        ),
        _row(
            "browser: a display change during a large forward (convnext_base, 448 px) < 100 ms",
            f"{_ms(large['first_ms'])}, {large['during_forward']} of {len(large['samples'])} while the forward ran",
            [large["first_ms"] < 100],
        ),
    ]


def table(results: dict[str, dict]) -> str:
    """The markdown table (with the run's stamp above it) that README.md shows."""
    core = results["core"]
    env = core["environment"]
    load = "/".join(f"{v:.2f}" for v in env["load_average"])
    lines = [
        f"From the run of {env['date']} at revision `{_revision(env['explorer_revision'])}` "
        f"(`{env['command']}`): {env['device'].upper()}, {env['torch_threads']} threads ({env['cpu']}, "
        f"{env['cores_logical']} cores, load average {load} at the start), random weights unless a row names the "
        "default.",
        "",
        "| target | measured | |",
        "| --- | --- | --- |",
    ]
    rows = (
        _core_rows(core)
        + _browser_rows(results["browser"])
        + _cam_rows(results["cam"])
        + _scan_rows(results["scan"])
        + _patch_view_rows(results["patch_views"])
        + _concepts_rows(results["concepts"])
        + _feature_vis_rows(results["feature_vis"])
    )
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def update_readme(readme: Path, text: str, check: bool = False) -> bool:
    """Put ``text`` between the markers of ``readme``; with ``check``, only say whether it is there already."""
    content = readme.read_text()
    if content.count(START) != 1 or content.count(END) != 1:
        raise MixedRunsError(f"{readme} needs one {START!r} line and one {END!r} line around the table")
    head, rest = content.split(START)
    _, tail = rest.split(END)
    new = f"{head}{START}\n{text}\n{END}{tail}"
    if check:
        return new == content
    readme.write_text(new)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.summary", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=HERE)
    parser.add_argument("--readme", type=Path, default=HERE.parent / "README.md")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    try:
        text = table(load(args.results))
        same = update_readme(args.readme, text, check=args.check)
    except MixedRunsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.check and not same:
        print(
            f"{args.readme}'s benchmark table differs from {args.results}; run python -m benchmarks.summary"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
