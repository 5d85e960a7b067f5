"""``python -m benchmarks.feature_vis``: a step of :func:`explorer.visualize` against its floor, and a batch of
channels against one run per channel.

For each model (the default with its packaged weights, resnet50 with random weights), one image, interleaved:

- floor: one forward pass to the stage and one backward pass of a channel's mean to the pixels (same model, same
  size, batch 1), the least any optimisation step can cost; floor16: the same at batch 16 (per image, it says
  what batching can gain on this device at all);
- fft, maco: a step of ``visualize(bb, stage, channel=0, method=...)``: the time of ``1 + STEPS`` steps less the
  time of 1 step, over ``STEPS`` (the spectrum, colours, transforms, normalisation, redirected ReLUs, Adam);
  ``fixed``: what a call costs besides its steps (the channel count probe, the final 8-bit pass);
- batch: 16 channels in one call against 16 calls of one channel (``BATCH_STEPS`` steps each), beside its
  ceiling: ``16 * floor / floor16``, the most that batching the forward and backward passes can give on this
  device (about 1 or below on a CPU, where a pass costs as much per image at batch 16 as at batch 1, so
  ``visualize`` runs one image per pass there and a batch gains only the work its images share);
- 512 steps: the time of one call of 512 steps (``fixed + 512 * step``), for each method.

``--ratio`` measures correctness instead: on the pretrained default, for ``--channels`` channels spread over each
stage, the optimised image's activation (``--ratio-steps`` steps, 128 px) over the best of the sample photos seen
at the same size; it prints the median, the smallest ratio and the share above 1 per stage.

Options::

    --ratio            the activation ratio instead of the timings
    --channels N       channels per stage for --ratio (default 16)
    --ratio-steps N    steps for --ratio (default 128)
    --quick            fewer repeats (a smoke run)
    --device cpu|cuda  where the models run
    --threads N        torch CPU threads (default 2)
    --size N           image side (default 224)
    --out DIR          where ``feature_vis.json`` (every row, stamped with the revision) goes
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import explorer  # noqa: E402

from . import report  # noqa: E402
from .timing import Method, device_sync, run_interleaved  # noqa: E402

MODELS = {"default": ("blocks.4", True), "resnet50": ("layer3", False)}  # spec: (stage, pretrained)
STEPS = 8
BATCH_STEPS = 4


def _floor(bb, stage: str, size: int, batch: int = 1):
    module = dict(bb.model.named_modules())[next(s.module for s in bb.all_stages if s.name == stage)]
    x = torch.randn(batch, 3, size, size, device=bb.device)

    class Stop(Exception):
        pass

    def run():
        found = {}

        def hook(_module, _args, output):
            found["y"] = output
            raise Stop

        handle = module.register_forward_hook(hook)
        pixels = x.clone().requires_grad_()
        try:
            with torch.enable_grad():
                try:
                    bb.model(pixels)
                except Stop:
                    pass
                return torch.autograd.grad(found["y"][:, 0].mean(), pixels)[0]
        finally:
            handle.remove()

    return run


def ratio(channels: int, steps: int, size: int = 128) -> dict[str, dict[str, float]]:
    """Per stage of the pretrained default: optimised activation / best sample photo's, over ``channels``."""
    import numpy as np
    from PIL import ImageOps

    bb = explorer.load_backbone("default", device="cpu")
    photos = [ImageOps.fit(image, (size, size)) for image in explorer.sample_images().values()]
    pixels = torch.from_numpy(np.stack([np.asarray(p, dtype=np.float32) for p in photos])).permute(0, 3, 1, 2)
    pixels = bb.preprocess.normalize(pixels / 255)  # as visualize() feeds its own images
    rows = {}
    for stage in bb.stage_names:
        count = next(s.channels for s in bb.all_stages if s.name == stage)
        picked = sorted({int(c) for c in np.linspace(0, count - 1, channels).round()})
        results = explorer.visualize(bb, stage=stage, channel=picked, steps=steps, size=size, seed=0)
        best = bb.capture(pixels, layers=[stage])[stage].mean((2, 3)).amax(0)
        ratios = np.array([r.activation / max(float(best[c]), 1e-6) for c, r in zip(picked, results)])
        rises = np.mean([r.history[-1] > r.history[0] for r in results])
        rows[stage] = {
            "channels": len(picked),
            "median_ratio": float(np.median(ratios)),
            "min_ratio": float(ratios.min()),
            "share_above_1": float(np.mean(ratios > 1)),
            "share_rising": float(rises),
        }
        print(json.dumps({stage: rows[stage]}), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.feature_vis", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--ratio", action="store_true")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--ratio-steps", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    command = "python -m benchmarks.feature_vis " + " ".join(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    if args.ratio:
        ratio(args.channels, args.ratio_steps)
        return 0
    repeats = 2 if args.quick else 5
    results = {}
    environment = report.environment(args.device, args.threads, command.strip())
    for spec, (stage, pretrained) in MODELS.items():
        bb = explorer.load_backbone(spec, pretrained=pretrained, device=args.device)
        for parameter in bb.model.parameters():
            parameter.requires_grad_(False)  # as visualize() runs it: no weight gradients in the floor either

        def vis(method: str, channel, steps: int, bb=bb, stage=stage):
            return lambda: explorer.visualize(
                bb, stage=stage, channel=channel, steps=steps, size=args.size, method=method
            )

        sync = device_sync(bb.device)
        timings = run_interleaved(
            [
                Method("floor", _floor(bb, stage, args.size)),
                Method("floor16", _floor(bb, stage, args.size, 16), repeats=max(1, repeats // 2)),
                Method("fft 1", vis("fft", 0, 1)),
                Method("fft", vis("fft", 0, 1 + STEPS)),
                Method("maco 1", vis("maco", 0, 1)),
                Method("maco", vis("maco", 0, 1 + STEPS)),
            ],
            repeats=repeats,
            warmup=1,
            sync=sync,
        )
        batch = run_interleaved(
            [
                Method("16 channels, one batch", vis("fft", list(range(16)), BATCH_STEPS)),
                Method(
                    "16 runs of one channel",
                    lambda vis=vis: [vis("fft", c, BATCH_STEPS)() for c in range(16)],
                ),
            ],
            repeats=max(1, repeats // 2),
            warmup=0,
            sync=sync,
        )
        floor = timings["floor"].median_ms
        row = {
            "floor_ms": floor,
            "floor16_per_image_ms": timings["floor16"].median_ms / 16,
            "fft_step_ms": (timings["fft"].median_ms - timings["fft 1"].median_ms) / STEPS,
            "maco_step_ms": (timings["maco"].median_ms - timings["maco 1"].median_ms) / STEPS,
            "batch16_ms": batch["16 channels, one batch"].median_ms,
            "runs16_ms": batch["16 runs of one channel"].median_ms,
        }
        row["fixed_ms"] = timings["fft 1"].median_ms - row["fft_step_ms"]
        row["fft_over_floor"] = row["fft_step_ms"] / floor
        row["maco_over_floor"] = row["maco_step_ms"] / floor
        row["batch_speedup"] = row["runs16_ms"] / row["batch16_ms"]
        row["batch_ceiling"] = 16 * floor / timings["floor16"].median_ms
        row["batch_of_ceiling"] = row["batch_speedup"] / row["batch_ceiling"]
        row["fft_512_steps_s"] = (row["fixed_ms"] + 512 * row["fft_step_ms"]) / 1000
        row["maco_512_steps_s"] = (row["fixed_ms"] + 512 * row["maco_step_ms"]) / 1000
        row["load_average"] = os.getloadavg()[0]
        results[f"{spec} {stage} {args.size}px {args.device}"] = row
        print(json.dumps({f"{spec} {stage}": row}, indent=1), flush=True)
        print(
            f"{spec} {stage}: a step {row['fft_over_floor']:.2f}x the floor (fft), "
            f"{row['maco_over_floor']:.2f}x (maco); 512 steps {row['fft_512_steps_s']:.1f} s (fft), "
            f"{row['maco_512_steps_s']:.1f} s (maco); 16 channels in one batch {row['batch_speedup']:.2f}x "
            f"faster than 16 runs, of a possible {row['batch_ceiling']:.2f}x from batching the passes on this "
            f"{args.device} (16 x floor / floor16); load average {row['load_average']:.1f}",
            flush=True,
        )
    path = args.out / "feature_vis.json"
    path.write_text(
        json.dumps({"environment": environment, "quick": args.quick, "rows": results}, indent=1) + "\n"
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
