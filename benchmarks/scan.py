"""``python -m benchmarks.scan``: dataset scans against a plain DataLoader + forward loop, memory, resume, Ray.

Four measurements, written to ``SCAN_RESULTS.md`` and ``scan_results.json`` beside this file:

- throughput: :func:`explorer.scan` (cache on, so shard writes count) against the floor, a plain loop of a torch
  ``DataLoader`` (same batch size, workers and preprocessing: :func:`explorer.images.preprocess` per image) and
  the same early-stopping forward pass (:meth:`explorer.Backbone.capture`) that keeps nothing. Runs alternate
  (floor, scan, floor, scan, ...); the best of each is reported.
- memory: the scan's peak RSS (kernel ``VmHWM`` of the scanning process) for 500 and for 5,000 generated
  32x32 PNGs (random resnet18 at 32x32, ``layer2``: memory is about the count, not the pictures), each in a fresh
  process, cache off.
- resume: a scan (the same small model, 2,048 generated 64x64 PNGs, shards of 256) killed mid-shard in a child
  process and started again, against one uninterrupted run; the extra scanning time in units of one shard's
  time.
- Ray: the same scan on a local Ray (``ray.init(num_cpus=2)``, started before the clock) against the local
  backend; the ratio of times and whether the results are identical.

Options::

    --quick        fewer images (a smoke run)
    --parts ...    a subset of: throughput memory resume ray (the others keep their last figures, and the
                   stamp says which command ran; a run of every part keeps nothing of an earlier one)
    --out DIR      where the results go (default: this folder)
    --threads N    torch CPU threads (default 2)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

import explorer  # noqa: E402
from explorer.dataset.fields import receptive_fields  # noqa: E402
from explorer.dataset.store import weights_digest  # noqa: E402
from explorer.preprocessing import preprocess  # noqa: E402

from . import report  # noqa: E402
from .datasets import small_backbone, write_images  # noqa: E402
from .memory import _MMAP_THRESHOLD, _peak_rss, _reset_peak_rss  # noqa: E402

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = 200
PARTS = ("throughput", "memory", "resume", "ray")


class _Files(Dataset):
    def __init__(self, paths: list[str], config) -> None:
        self.paths, self.config = paths, config

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return preprocess([self.paths[index]], self.config)[0]


def _paths(count: int) -> list[str]:
    folder = explorer.sample_dataset(n=SAMPLES)
    files = sorted(str(p) for p in folder.iterdir())
    return [files[i % len(files)] for i in range(count)]


def _backbone(spec: str, stages: list[str]) -> explorer.Backbone:
    return explorer.load_backbone(spec, out_features=stages, pretrained=spec == "default", device="cpu")


def _floor(bb: explorer.Backbone, paths: list[str], batch_size: int, workers: int) -> None:
    loader = DataLoader(_Files(paths, bb.preprocess), batch_size=batch_size, num_workers=workers)
    for pixels in loader:
        bb.capture(pixels, bb.out_features)


def _scan(bb: explorer.Backbone, paths: list[str], batch_size: int, workers: int, **options) -> explorer.Scan:
    with tempfile.TemporaryDirectory() as cache:
        return explorer.scan(
            bb, paths, batch_size=batch_size, num_workers=workers, cache=cache, progress=False, **options
        )


def throughput(
    cases: list[tuple[str, list[str]]], count: int, rounds: int, batch_size: int = 32
) -> list[dict]:
    """Images/s of the scan and of the floor, best of ``rounds`` alternating runs, per (spec, stages)."""
    rows = []
    paths = _paths(count)
    for spec, stages in cases:
        bb = _backbone(spec, stages)
        _floor(bb, paths[:batch_size], batch_size, 0)  # warm up
        times: dict[str, list[float]] = {"floor": [], "scan": []}
        for _ in range(rounds):
            for name, run in (("floor", _floor), ("scan", _scan)):
                start = time.perf_counter()
                run(bb, paths, batch_size, 2)
                times[name].append(time.perf_counter() - start)
        start = time.perf_counter()  # what a scan pays once, whatever its size: the cache key, the fields
        weights_digest(bb.model)
        receptive_fields(bb, stages)
        fixed = time.perf_counter() - start
        floor, scan = count / min(times["floor"]), count / min(times["scan"])
        steady = count / max(1e-9, min(times["scan"]) - fixed)
        rows.append(
            {
                "model": spec,
                "stages": stages,
                "images": count,
                "batch_size": batch_size,
                "workers": 2,
                "floor_images_per_s": floor,
                "scan_images_per_s": scan,
                "ratio": scan / floor,
                "fixed_s": fixed,
                "steady_ratio": steady / floor,
                "seconds": times,
            }
        )
    return rows


def _child_env() -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=_MMAP_THRESHOLD, HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def _child(args: argparse.Namespace) -> None:
    """One scan of the first ``--images`` files of ``--folder`` in this process (the small model at ``--size``);
    prints a JSON line when it starts and one with its figures when it ends."""
    torch.set_num_threads(args.threads)
    bb = small_backbone(args.size)
    paths = sorted(str(p) for p in Path(args.folder).iterdir())[: args.images]
    print(json.dumps({"started": time.time()}), flush=True)
    exact = _reset_peak_rss()
    start = time.perf_counter()
    scan = explorer.scan(
        bb,
        paths,
        batch_size=32,
        num_workers=2,
        shard_size=args.shard_size,
        cache=args.cache,
        progress=False,
    )
    seconds = time.perf_counter() - start
    peak = _peak_rss() if exact else None
    print(json.dumps({"seconds": seconds, "peak_rss_bytes": peak, "images": len(scan)}), flush=True)


def _run_child(
    folder: str,
    size: int,
    images: int,
    cache: str,
    shard_size: int,
    threads: int,
    kill_after_shards: int | None = None,
):
    command = [sys.executable, "-m", "benchmarks.scan", "--child", "--images", str(images), "--cache", cache]
    command += [
        "--shard-size",
        str(shard_size),
        "--threads",
        str(threads),
        "--folder",
        folder,
        "--size",
        str(size),
    ]
    child = subprocess.Popen(command, cwd=ROOT, env=_child_env(), stdout=subprocess.PIPE, text=True)
    started = json.loads(child.stdout.readline())["started"]
    if kill_after_shards is None:
        lines = [line for line in child.stdout.read().splitlines() if line.startswith("{")]
        child.wait()
        return json.loads(lines[-1])
    markers = Path(cache)
    while len(list(markers.glob("*/shard-*.json"))) < kill_after_shards and child.poll() is None:
        time.sleep(0.02)
    finished = time.time()
    time.sleep(max(0.0, (finished - started) / kill_after_shards / 2))  # half way into the next shard
    child.kill()
    child.wait()
    return {"seconds": time.time() - started, "shards_done": len(list(markers.glob("*/shard-*.json")))}


def memory(threads: int, counts: tuple[int, ...] = (500, 5000)) -> list[dict]:
    """Peak RSS of the scanning process for each image count, each in a fresh process, cache off."""
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        write_images(Path(folder), max(counts), 32)
        for count in counts:
            with tempfile.TemporaryDirectory() as cache:
                found = _run_child(folder, 32, count, cache, 256, threads)
            rows.append({"images": count, **found})
    return rows


def resume(threads: int, count: int, shard_size: int) -> dict:
    """Extra scanning time of a kill in the middle of a shard and a restart, in shards."""
    with tempfile.TemporaryDirectory() as folder:
        write_images(Path(folder), count, 64)
        with tempfile.TemporaryDirectory() as cache:
            whole = _run_child(folder, 64, count, cache, shard_size, threads)
        with tempfile.TemporaryDirectory() as cache:
            half = count // shard_size // 2
            killed = _run_child(folder, 64, count, cache, shard_size, threads, kill_after_shards=half)
            resumed = _run_child(folder, 64, count, cache, shard_size, threads)
    shard_seconds = whole["seconds"] / (count / shard_size)
    extra = killed["seconds"] + resumed["seconds"] - whole["seconds"]
    return {
        "images": count,
        "shard_size": shard_size,
        "uninterrupted_s": whole["seconds"],
        "killed_after_s": killed["seconds"],
        "shards_done_when_killed": killed["shards_done"],
        "resumed_s": resumed["seconds"],
        "extra_s": extra,
        "extra_shards": extra / shard_seconds,
    }


def ray_overhead(count: int, shard_size: int) -> dict:
    """The same scan on the local backend and on a local Ray with 2 CPUs."""
    import ray

    bb = _backbone("default", ["blocks.2"])
    paths = _paths(count)
    options = dict(shard_size=shard_size)
    for attempt in range(3):  # Ray gives a starting node 30 s, which a loaded machine can miss
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    try:
        start = time.perf_counter()
        local = _scan(bb, paths, 32, 2, **options)
        local_s = time.perf_counter() - start
        start = time.perf_counter()
        on_ray = _scan(bb, paths, 32, 2, backend="ray", **options)
        ray_s = time.perf_counter() - start
    finally:
        ray.shutdown()
    pairs = [
        (mine, theirs)
        for stage in local.stages
        for c in range(local.channels(stage))
        for mine, theirs in zip(local.top(stage, c), on_ray.top(stage, c), strict=True)
    ]
    return {
        "images": count,
        "local_s": local_s,
        "ray_s": ray_s,
        "ratio": ray_s / local_s,
        "identical": all(mine == theirs for mine, theirs in pairs),
        # Ray batches the images differently; convolutions round differently by batch size
        "same_exemplars": all((m.source, m.cell) == (t.source, t.cell) for m, t in pairs),
        "largest_relative_difference": max(
            abs(m.value - t.value) / max(abs(m.value), 1e-12) for m, t in pairs
        ),
    }


def _markdown(results: dict) -> str:
    env = results["environment"]
    lines = [
        "# Dataset scans: throughput, memory, resume, Ray",
        "",
        f"{env['date']}, `{env['command']}`, {env['cpu']}, {env['cores_logical']} logical cores, torch threads "
        f"{env['torch_threads']}, explorer {env['explorer_revision']}.",
        "",
    ]
    if results["quick"]:
        lines += ["**Quick run**: few images; a smoke test, not figures to quote.", ""]
    if results.get("throughput"):
        lines += [
            "## Throughput against a plain DataLoader + forward loop (same batch, workers, preprocessing)",
            "",
        ]
        lines += [
            "| model | stages | images | floor img/s | scan img/s | scan / floor | once per scan (key, fields) "
            "| scan / floor without it |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in results["throughput"]:
            lines.append(
                f"| {row['model']} | {', '.join(row['stages'])} | {row['images']} | {row['floor_images_per_s']:.1f} "
                f"| {row['scan_images_per_s']:.1f} | {row['ratio']:.2f}x | {row.get('fixed_s', float('nan')):.1f} s "
                f"| {row.get('steady_ratio', float('nan')):.2f}x |"
            )
    if results.get("memory"):
        lines += [
            "",
            "## Peak memory of the scanning process (random resnet18 at 32x32, layer2, batch 32, 2 workers)",
            "",
        ]
        lines += ["| images | peak RSS MiB | seconds |", "|---|---|---|"]
        for row in results["memory"]:
            peak = row.get("peak_rss_bytes")
            lines.append(
                f"| {row['images']} | {peak / 2**20:.0f} | {row['seconds']:.1f} |"
                if peak
                else "| - | - | - |"
            )
        peaks = [row.get("peak_rss_bytes") or 0 for row in results["memory"]]
        if len(peaks) == 2 and all(peaks):
            counts = [row["images"] for row in results["memory"]]
            lines += ["", f"{counts[1]:,} against {counts[0]:,} images: {peaks[1] / peaks[0]:.3f}x the peak."]
    if results.get("resume"):
        r = results["resume"]
        lines += [
            "",
            "## Resume after a kill in the middle of a shard",
            "",
            f"{r['images']} images in shards of {r['shard_size']}: uninterrupted {r['uninterrupted_s']:.1f} s; "
            f"killed after {r['killed_after_s']:.1f} s with {r['shards_done_when_killed']} shards written, then "
            f"resumed in {r['resumed_s']:.1f} s. Extra: {r['extra_s']:.1f} s = {r['extra_shards']:.2f} shards "
            "(scan time only; process start and model load excluded).",
        ]
    if results.get("ray"):
        ray = results["ray"]
        lines += [
            "",
            "## Ray (local, 2 CPUs) against the local backend",
            "",
            f"{ray['images']} images: local {ray['local_s']:.1f} s, Ray {ray['ray_s']:.1f} s: {ray['ratio']:.2f}x "
            f"the time (actor start-up included); results identical: {ray['identical']}; the same exemplars "
            f"(images and cells, in order): {ray['same_exemplars']}; the largest relative difference of a value: "
            f"{ray['largest_relative_difference']:.1e} (Ray cuts the images into other batches, and convolutions "
            "round differently by batch size).",
        ]
    if results.get("errors"):
        lines += ["", "## Parts that failed", ""] + [f"- {k}: {v}" for k, v in results["errors"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scan", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--shard-size", type=int, default=256, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return 0
    torch.set_num_threads(args.threads)
    command = "python -m benchmarks.scan " + " ".join(sys.argv[1:] if argv is None else argv)
    count, rounds = (64, 1) if args.quick else (256, 3)
    path = args.out / "scan_results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    if results.get("quick") != args.quick or set(args.parts) == set(PARTS):
        results = {}  # a full run keeps nothing of an earlier one
    results.update(environment=report.environment("cpu", args.threads, command.strip()), quick=args.quick)
    results.setdefault("errors", {})
    parts = {
        "throughput": lambda: throughput(
            [("default", ["blocks.6"]), ("default", ["blocks.1"]), ("resnet50", ["layer4"])], count, rounds
        ),
        "memory": lambda: memory(args.threads),
        "resume": lambda: resume(args.threads, 512 if args.quick else 2048, 128 if args.quick else 256),
        "ray": lambda: ray_overhead(count, 16 if args.quick else 64),
    }
    for name in args.parts:
        try:
            results[name] = parts[name]()
            results["errors"].pop(name, None)
        except Exception as err:  # one failed part (Ray timing out on a loaded machine) keeps the others
            results["errors"][name] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        path.write_text(json.dumps(results, indent=1) + "\n")  # after every part: nothing measured is lost
        (args.out / "SCAN_RESULTS.md").write_text(_markdown(results))
    print(_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
