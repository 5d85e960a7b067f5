"""``python -m benchmarks``: every benchmark of explorer in one run, each results file stamped with this revision.

The core suites (capture, render, panel, memory) run here and write RESULTS.md, results.json and results.png;
then each standalone benchmark runs in its own process, one after the other (CAM, scans, patch views, feature
visualisation, concepts, the panel in the browser), writing its own file (CAM_RESULTS.md, SCAN_RESULTS.md, the
browser section of RESULTS.md) or its printed tables, which go into RESULTS.md's last section with the command,
exit status and duration of each. No figure is carried over from another run.

Options::

    --quick              few repeats: a smoke run of every suite (minutes)
    --device cpu|cuda    where models and maps live (cuda: synchronised timings, allocator peaks)
    --out DIR            where every results file goes, the standalone benchmarks' too (default: this folder)
    --threads N          torch CPU threads (default 2)
    --suites ...         a subset of: capture render panel memory cam scan patch_views feature_vis concepts browser
    --models ...         a subset of the models
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random-init models only: never reach for a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from . import report, suites, summary  # noqa: E402

_log = logging.getLogger("benchmarks")

CORE = ("capture", "render", "panel", "memory")
CHILDREN = {  # name: (module, options, options with --quick); each writes its own results or prints them
    "cam": ("benchmarks.cam", [], ["--quick"]),
    "scan": ("benchmarks.scan", [], ["--quick"]),
    "patch_views": ("benchmarks.patch_views", [], ["--repeats", "5"]),
    "feature_vis": ("benchmarks.feature_vis", [], ["--quick"]),
    "concepts": ("benchmarks.concepts", [], ["--quick"]),
    "browser": ("benchmarks.browser", ["--label", "this run"], ["--label", "this run", "--quick"]),
}
WRITERS = ("cam", "scan", "patch_views", "feature_vis", "concepts", "browser")
"""The children that write results files: each is given ``--out``, so a run's files all land in one folder."""
THREADED = ("cam", "scan", "patch_views", "feature_vis", "concepts")
"""The children that take ``--threads``."""
SUITES = CORE + tuple(CHILDREN)
CHILD_TIMEOUT_S = 3600


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats, for a smoke run")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="output folder")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--suites", nargs="+", choices=SUITES, default=list(SUITES))
    parser.add_argument("--models", nargs="+", choices=suites.MODELS, default=list(suites.MODELS))
    return parser.parse_args(argv)


def _summary(settings: suites.Settings) -> str:
    return (
        f"capture: {settings.repeats[1]} timed calls at batch 1, {settings.repeats[8]} at batch 8, TorchLens "
        f"{settings.torchlens_repeats[1]}/{settings.torchlens_repeats[8]}; rendering {settings.render_repeats}, "
        f"matplotlib {settings.matplotlib_repeats}; panel {settings.panel_repeats} per display change, "
        f"{settings.panel_images} images, {settings.panel_checkpoints} per checkpoint change"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the chosen suites, then write the results; returns the exit status."""
    args = _arguments(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    _log.setLevel(logging.INFO)  # progress of the suite; the library's own INFO lines stay quiet
    if args.device == "cuda" and not torch.cuda.is_available():
        _log.error("--device cuda: torch sees no CUDA device here")
        return 2
    torch.set_num_threads(args.threads)
    settings = suites.QUICK if args.quick else suites.FULL
    device = torch.device(args.device)
    command = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    results: dict = {
        "environment": report.environment(args.device, args.threads, command.strip()),
        "quick": args.quick,
        "settings": {"name": "quick" if args.quick else "full", "summary": _summary(settings)},
        "errors": {},
    }
    started = time.perf_counter()
    runs = {
        "capture": lambda: suites.capture_suite(settings, device, args.models),
        "render": lambda: suites.render_suite(settings, device),
        "panel": lambda: suites.panel_suite(settings, args.device),
        "memory": lambda: suites.memory_suite(args.device, args.models, threads=args.threads),
    }
    for name in CORE:
        if name not in args.suites:
            continue
        suite_start = time.perf_counter()
        try:
            results[name] = runs[name]()
        except Exception as err:  # one broken suite (the panel is still changing) must not lose the others
            results[name] = None
            results["errors"][name] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
            _log.error("suite %s failed:\n%s", name, traceback.format_exc())
        _log.info("suite %s took %.0f s", name, time.perf_counter() - suite_start)
    results["elapsed_s"] = time.perf_counter() - started
    results["targets"] = report.evaluate_targets(results)
    for path in report.write_all(results, args.out):
        _log.info("wrote %s", path)
    for target in results["targets"]:
        verdict = {True: "met", False: "NOT MET", None: "not measured"}[target["met"]]
        _log.info("%-10s %s: %s", verdict, target["target"], target["measured"])
    children = [name for name in CHILDREN if name in args.suites]
    if children:
        runs = [_run_child(name, args) for name in children]
        report.append_children(runs, args.out / "RESULTS.md")
    if set(args.suites) == set(SUITES) and not args.quick and args.out.resolve() == summary.HERE:
        try:  # a full run into this folder: the README's table follows it
            summary.update_readme(summary.HERE.parent / "README.md", summary.table(summary.load(args.out)))
            _log.info("wrote the benchmark table of README.md")
        except (summary.MixedRunsError, KeyError) as err:
            _log.error("README.md's benchmark table not written: %s", err)
    return 0


def _run_child(name: str, args: argparse.Namespace) -> dict:
    """Run one standalone benchmark in its own process; its command, status, duration and printed output."""
    module, options, quick_options = CHILDREN[name]
    command = [sys.executable, "-m", module, *(quick_options if args.quick else options)]
    if name in WRITERS:
        command += ["--out", str(args.out)]
    if name in THREADED:
        command += ["--threads", str(args.threads)]
    if name == "browser":
        (args.out / "browser.json").unlink(missing_ok=True)  # this run's figures only
    _log.info("running %s", " ".join(command[1:]))
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
        status, output = done.returncode, done.stdout
        if done.returncode:
            output += "\n" + done.stderr[-2000:]
    except subprocess.TimeoutExpired as err:
        status, output = "timed out", (err.stdout or b"").decode(errors="replace") if err.stdout else ""
    seconds = time.perf_counter() - started
    _log.info("%s: exit %s after %.0f s", name, status, seconds)
    return {
        "name": name,
        "command": "python " + " ".join(command[1:]),
        "status": status,
        "seconds": seconds,
        "output": output,
    }


if __name__ == "__main__":
    sys.exit(main())
