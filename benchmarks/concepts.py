"""``python -m benchmarks.concepts``: the concepts' exemplar pass against the scan's own, the dictionary fit on
100k x 320 feature vectors, and the memory of :func:`explorer.concepts` at 1,000 and 10,000 images.

Three measurements, written to ``CONCEPTS_RESULTS.md`` and ``concepts_results.json`` beside this file:

- pass 2: :func:`explorer.scan` over the projected stage (the concepts' codes: what :func:`explorer.concepts`
  runs as its second pass) against the same scan of the stage itself (cache on in both). Runs alternate
  (scan, pass 2, scan, ...); the best of each is reported. Images: small PNGs generated into a temp folder.
- fit: :func:`explorer.dictionary.fit_dictionary` on 100,000 feature vectors of 320 channels: the default
  model's ``blocks.6`` (signed) on :func:`explorer.sample_dataset` images upsampled to 448 pixels (196 locations
  each), for ``semi-nmf`` and ``topk-sae``; ``nmf`` on their positive part (NMF takes no negative values). Wall
  and CPU time of this process (one torch thread: CPU time is what the fit costs on an idle core; wall time adds
  what other processes on the machine took), with the relative reconstruction error and the sparsity of the
  codes.
- memory: peak RSS (kernel ``VmHWM``) of a child process running :func:`explorer.concepts` (random resnet18 at
  32x32, ``layer2``, 8 semi-nmf concepts, a reservoir of 10,000 locations) over 1,000 and over 10,000 generated
  images, each in a fresh process, cache off.

Options::

    --quick          fewer images (a smoke run)
    --parts ...      a subset of: pass2 fit memory (the others keep their last figures)
    --features PATH  a saved (100000, 320) float32 tensor to fit on (torch.save), instead of computing it
    --out DIR        where the results go (default: this folder)
    --threads N      torch CPU threads for pass 2 and memory (default 2; the fit uses 1)
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
from PIL import Image  # noqa: E402

import explorer  # noqa: E402
from explorer.concept_set import ConceptCodes  # noqa: E402
from explorer.dictionary import fit_dictionary  # noqa: E402

from . import report  # noqa: E402
from .datasets import small_backbone, write_images  # noqa: E402
from .memory import _MMAP_THRESHOLD, _peak_rss, _reset_peak_rss  # noqa: E402

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("pass2", "fit", "memory")
FIT_ROWS, FIT_CHANNELS, FIT_CONCEPTS = 100_000, 320, 32


def pass2(count: int, rounds: int) -> dict:
    """Images/s of the scan of the default's ``blocks.4`` and of the same scan over its concept codes."""
    bb = explorer.load_backbone("default", out_features=["blocks.4"], device="cpu")
    with tempfile.TemporaryDirectory() as folder:
        paths = write_images(Path(folder) / "images", count, 96)
        con = explorer.concepts(
            bb, paths, "blocks.4", 32, "semi-nmf", cache=None, num_workers=2, progress=False, samples=20_000
        )
        project = ConceptCodes(con._dictionary, "blocks.4")
        times: dict[str, list[float]] = {"scan": [], "pass2": []}
        for _ in range(rounds):
            for name, options in (("scan", {}), ("pass2", {"project": project})):
                with tempfile.TemporaryDirectory() as cache:
                    start = time.perf_counter()
                    explorer.scan(
                        bb, paths, out_features=["blocks.4"], k=9, cache=cache, progress=False, **options
                    )
                    times[name].append(time.perf_counter() - start)
    scan, projected = count / min(times["scan"]), count / min(times["pass2"])
    return {
        "model": "default",
        "stage": "blocks.4",
        "n_concepts": 32,
        "method": "semi-nmf",
        "images": count,
        "scan_images_per_s": scan,
        "pass2_images_per_s": projected,
        "ratio": projected / scan,
        "seconds": times,
    }


def _features(path: Path | None) -> torch.Tensor:
    if path is not None:
        return torch.load(path)
    bb = explorer.load_backbone("default", out_features=["blocks.6"], device="cpu")
    files = sorted(explorer.sample_dataset(n=FIT_ROWS // 196 + 10).iterdir())
    rows = []
    for start in range(0, len(files), 20):
        pixels = bb.pixel_values([Image.open(f).convert("RGB") for f in files[start : start + 20]])
        pixels = torch.nn.functional.interpolate(
            pixels, size=(448, 448), mode="bilinear", align_corners=False
        )
        fmap = bb.capture(pixels, ["blocks.6"])["blocks.6"]
        rows.append(fmap.permute(0, 2, 3, 1).reshape(-1, fmap.shape[1]).float())
    return torch.cat(rows)[:FIT_ROWS].contiguous()


def fit(path: Path | None) -> list[dict]:
    """Wall and CPU seconds of each method's fit on 100k x 320 vectors, one torch thread, and its quality."""
    from explorer.dictionary import nnls_codes

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        signed = _features(path)
        rows = []
        for method in ("nmf", "semi-nmf", "topk-sae"):
            vectors = signed.clamp_min(0) if method == "nmf" else signed
            wall, cpu = time.perf_counter(), time.process_time()
            dictionary = fit_dictionary(vectors, FIT_CONCEPTS, method, seed=0)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            codes = (
                dictionary.codes(vectors) if method == "topk-sae" else nnls_codes(vectors, dictionary.basis)
            )
            error = float((vectors - dictionary.reconstruct(codes)).norm() / vectors.norm())
            rows.append(
                {
                    "method": method,
                    "data": "positive part" if method == "nmf" else "signed",
                    "rows": len(vectors),
                    "channels": vectors.shape[1],
                    "n_concepts": FIT_CONCEPTS,
                    "wall_s": wall,
                    "cpu_s": cpu,
                    "relative_error": error,
                    "zero_codes": float((codes == 0).float().mean()),
                    "load_average": os.getloadavg()[0],
                }
            )
        return rows
    finally:
        torch.set_num_threads(threads)


def _child_env() -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=_MMAP_THRESHOLD, HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def _child(args: argparse.Namespace) -> None:
    """One concepts run in this process over the first ``--images`` files of ``--folder``; prints its figures."""
    torch.set_num_threads(args.threads)
    bb = small_backbone(32)
    paths = sorted(str(p) for p in Path(args.folder).iterdir())[: args.images]
    exact = _reset_peak_rss()
    start = time.perf_counter()
    con = explorer.concepts(
        bb, paths, "layer2", 8, "semi-nmf", samples=10_000, cache=None, num_workers=2, progress=False
    )
    seconds = time.perf_counter() - start
    peak = _peak_rss() if exact else None
    print(json.dumps({"seconds": seconds, "peak_rss_bytes": peak, "images": len(con.scan)}), flush=True)


def memory(threads: int, counts: tuple[int, ...]) -> list[dict]:
    """Peak RSS of a concepts run for each image count, each in a fresh process."""
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        write_images(Path(folder), max(counts), 32)
        for count in counts:
            command = [sys.executable, "-m", "benchmarks.concepts", "--child", "--images", str(count)]
            command += ["--folder", folder, "--threads", str(threads)]
            done = subprocess.run(
                command, cwd=ROOT, env=_child_env(), capture_output=True, text=True, check=True
            )
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            rows.append({"images": count, **json.loads(lines[-1])})
    return rows


def _markdown(results: dict) -> str:
    env = results["environment"]
    lines = [
        "# Concepts: the exemplar pass, the fit, memory",
        "",
        f"{env['date']}, `{env['command']}`, {env['cpu']}, {env['cores_logical']} logical cores, torch threads "
        f"{env['torch_threads']}, explorer {env['explorer_revision']}.",
        "",
    ]
    if results["quick"]:
        lines += ["**Quick run**: few images; a smoke test, not figures to quote.", ""]
    if results.get("pass2"):
        row = results["pass2"]
        lines += [
            "## Pass 2 (the scan over the concept codes) against the scan of the stage",
            "",
            f"{row['model']} `{row['stage']}`, {row['n_concepts']} {row['method']} concepts, {row['images']} images "
            f"(96 px PNGs), batch 32, 2 workers, cache on: scan {row['scan_images_per_s']:.1f} img/s, pass 2 "
            f"{row['pass2_images_per_s']:.1f} img/s: **{row['ratio']:.2f}x** the scan's throughput (best of "
            f"{len(row['seconds']['scan'])}).",
        ]
    if results.get("fit"):
        lines += [
            "",
            f"## The fit on {FIT_ROWS:,} x {FIT_CHANNELS} feature vectors ({FIT_CONCEPTS} concepts, one torch thread)",
            "",
            "| method | data | wall s | CPU s | relative error | zero codes | load average |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in results["fit"]:
            lines.append(
                f"| {row['method']} | {row['data']} | {row['wall_s']:.1f} | {row['cpu_s']:.1f} | "
                f"{row['relative_error']:.3f} | {row['zero_codes']:.1%} | {row['load_average']:.1f} |"
            )
    if results.get("memory"):
        lines += ["", "## Peak memory of a concepts run (resnet18 random at 32 px, layer2, 8 concepts)", ""]
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
            lines += [
                "",
                f"{results['memory'][1]['images']:,} against {results['memory'][0]['images']:,} images: "
                f"{peaks[1] / peaks[0]:.3f}x the peak.",
            ]
    if results.get("errors"):
        lines += ["", "## Parts that failed", ""] + [f"- {k}: {v}" for k, v in results["errors"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.concepts", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure")
    parser.add_argument("--features", type=Path, help="a saved (100000, 320) tensor to fit on")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return 0
    torch.set_num_threads(args.threads)
    command = "python -m benchmarks.concepts " + " ".join(sys.argv[1:] if argv is None else argv)
    path = args.out / "concepts_results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    if results.get("quick") != args.quick:
        results = {}
    results.update(environment=report.environment("cpu", args.threads, command.strip()), quick=args.quick)
    results.setdefault("errors", {})
    parts = {
        "pass2": lambda: pass2(64 if args.quick else 256, 1 if args.quick else 2),
        "fit": lambda: fit(args.features),
        "memory": lambda: memory(args.threads, (100, 1000) if args.quick else (1000, 10_000)),
    }
    for name in args.parts:
        try:
            results[name] = parts[name]()
            results["errors"].pop(name, None)
        except Exception as err:  # one failed part keeps the others
            results["errors"][name] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        path.write_text(json.dumps(results, indent=1) + "\n")  # after every part: nothing measured is lost
        (args.out / "CONCEPTS_RESULTS.md").write_text(_markdown(results))
    print(_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
