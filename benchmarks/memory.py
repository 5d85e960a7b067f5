"""Peak memory of one call, each measured in a fresh Python process so that nothing earlier skews it.

On the CPU the child process resets the kernel's peak-RSS mark (``/proc/self/clear_refs``, Linux 4.0+) just
before the call, and reads it (``VmHWM`` in ``/proc/self/status``) after: the exact peak resident set size
(RSS) during the call, less the RSS before it. Where the mark cannot be reset, a thread samples RSS every
millisecond (psutil) instead. glibc is told to serve every block above 64 KiB with ``mmap`` and to give it back
on free (``MALLOC_MMAP_THRESHOLD_``), so RSS follows the live tensors instead of holding freed heap. Before
measuring, the same call runs once at batch 1 (library initialisation, lazy buffers). On CUDA the peak is
``torch.cuda.max_memory_allocated`` above what was allocated before the call.

Run as a child: ``python -m benchmarks.memory --model resnet50 --method explorer --batch 8`` prints one
JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["MEMORY_METHODS", "measure_in_subprocess", "measure_peak"]

MEMORY_METHODS = ("bare", "explorer")
"""``bare``: ``model.forward_features(x)``; ``explorer``: ``bb(x)`` with every stage selected."""

_MMAP_THRESHOLD = str(64 * 1024)
_KIB = 1024


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _reset_peak_rss() -> bool:
    """Set the kernel's peak-RSS mark to the current RSS; False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _peak_rss() is not None


def _peak_rss() -> int | None:
    """The kernel's peak RSS of this process since the last reset (``VmHWM``), in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * _KIB
    except (OSError, ValueError, IndexError):
        pass
    return None


def measure_peak(fn: Callable[[], object], device: str, interval_s: float = 0.001) -> dict:
    """Peak memory of ``fn()`` above what was in use just before it (bytes), and what its result holds on to.

    Returns:
        ``peak_bytes`` (the call's peak above the start), ``retained_bytes`` (still in use while the result is
        held) and ``method`` (how the peak was read).
    """
    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        result = fn()
        torch.cuda.synchronize()
        peak, after = torch.cuda.max_memory_allocated(), torch.cuda.memory_allocated()
        del result
        return {"peak_bytes": peak - before, "retained_bytes": after - before, "method": "cuda allocator"}

    before = _rss()
    exact = _reset_peak_rss()
    sampled = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            sampled.append(_rss())
            time.sleep(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = fn()
    finally:
        done.set()
        sampler.join()
    after, high_water = _rss(), _peak_rss() if exact else None
    del result
    peak = high_water if high_water is not None else max(sampled + [after])
    return {
        "peak_bytes": peak - before,
        "sampled_peak_bytes": max(sampled + [after]) - before,
        "retained_bytes": after - before,
        "method": "kernel peak RSS (VmHWM)"
        if high_water is not None
        else f"RSS sampled every {interval_s * 1000:g} ms",
    }


def _child(model: str, method: str, batch: int, device: str, threads: int) -> dict:
    import torch

    import explorer

    torch.set_num_threads(threads)
    bb = explorer.load_backbone(model, pretrained=False, device=device)
    bb.out_indices = list(range(len(bb.stage_names)))
    forward = bb.model.forward_features

    def call(x: torch.Tensor) -> object:
        if method == "explorer":
            return bb(x)
        with torch.inference_mode():
            return forward(x)

    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)
    call(x[:1])  # initialise libraries and lazy buffers outside the measurement
    result = measure_peak(lambda: call(x), device)
    maps = bb(x[:1])
    result["maps_bytes"] = batch * sum(t[:1].numel() * t.element_size() for t in maps.values())
    return result


def measure_in_subprocess(
    model: str, method: str, batch: int, device: str = "cpu", threads: int = 2, timeout_s: float = 300
) -> dict:
    """Run one measurement in a fresh interpreter and return its JSON result (with ``error`` on failure)."""
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=_MMAP_THRESHOLD, HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    command = [
        sys.executable,
        "-m",
        "benchmarks.memory",
        "--model",
        model,
        "--method",
        method,
        "--batch",
        str(batch),
        "--device",
        device,
        "--threads",
        str(threads),
    ]
    try:
        done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {done.returncode}: {tail[:200]}"}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> None:
    """Child entry point: measure one (model, method, batch, device) and print the result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--method", choices=MEMORY_METHODS, required=True)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    result = _child(args.model, args.method, args.batch, args.device, args.threads)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
