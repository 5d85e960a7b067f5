"""``python -m benchmarks``: measure explorer against its peers and write RESULTS.md, results.json, results.png.

Options::

    --quick              few repeats: a smoke run of every suite (minutes)
    --device cpu|cuda    where models and maps live (cuda: synchronised timings, allocator peaks)
    --out DIR            where the results go (default: this folder)
    --threads N          torch CPU threads (default 2)
    --suites ...         a subset of: capture render panel memory
    --models ...         a subset of the models
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random-init models only: never reach for a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from . import report, suites  # noqa: E402

_log = logging.getLogger("benchmarks")

SUITES = ("capture", "render", "panel", "memory")


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
    for name in SUITES:
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
