"""``python -m benchmarks.cam``: GradCAM through :func:`explorer.cam` against its floor and grad-cam by hand.

For each model (resnet50, the default, a ViT, a Swin; random weights; 224x224; batch 1), interleaved:

- floor: one forward pass of the whole model and one backward pass of the target logit to the stage, the least
  any GradCAM can cost (a hook makes the stage's output the leaf that the gradient is taken for);
- explorer: ``explorer.cam(bb, x, stage=..., target=..., method="gradcam")``, everything included (hooks, the
  grad-cam object, the map at the stage and upsampled to the input);
- grad-cam by hand: ``GradCAM(model, target_layers=[layer], reshape_transform=...)`` built once, as its README
  does, on the model as timm returns it (weights trainable), called with the same target.

Then a leak check: hooks on the model and Python memory (tracemalloc) before and after 1,000 calls (100 with
``--quick``). Results go to ``CAM_RESULTS.md`` and ``cam_results.json`` beside this file.

Options::

    --quick            fewer repeats and calls (a smoke run)
    --device cpu|cuda  where the models run
    --threads N        torch CPU threads (default 2)
    --out DIR          where the results go (default: this folder)
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import sys
import tracemalloc
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import explorer  # noqa: E402

from . import report  # noqa: E402
from .timing import Method, device_sync, run_interleaved  # noqa: E402

__all__ = ["main", "MODELS"]

MODELS = {  # spec: stage explained (the last stage; for the class-token ViT, the one explorer picks)
    "resnet50": "layer4",
    "default": "blocks.6",
    "vit_small_patch16_224": "blocks.10",
    "swin_tiny_patch4_window7_224": "layers.3",
}
TARGET = 281


def _reshape(bb: explorer.Backbone, stage: str):
    """The reshape_transform a grad-cam user writes for this stage (None for NCHW)."""
    found = next(s for s in bb.all_stages if s.name == stage)
    if found.channels_last:
        return lambda t: t.permute(0, 3, 1, 2)
    prefix = getattr(bb.model, "num_prefix_tokens", 0)
    if prefix or "vit" in bb.spec:
        side = bb.preprocess.input_size[0] // found.reduction
        return lambda t: t[:, prefix:].reshape(t.shape[0], side, side, -1).permute(0, 3, 1, 2)
    return None


def _floor(model: torch.nn.Module, module: torch.nn.Module, x: torch.Tensor):
    def run() -> torch.Tensor:
        leaf = {}

        def hook(_module, _args, output):
            leaf["x"] = output.detach().requires_grad_()
            return leaf["x"]

        handle = module.register_forward_hook(hook)
        try:
            with torch.enable_grad():
                logits = model(x)
                return torch.autograd.grad(logits[:, TARGET].sum(), leaf["x"])[0]
        finally:
            handle.remove()

    return run


def timing(spec: str, stage: str, device: torch.device, repeats: int) -> dict:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    bb = explorer.load_backbone(spec, pretrained=spec == "default", device=device)
    x = torch.randn(1, 3, *bb.preprocess.input_size, device=device)
    hand_model = copy.deepcopy(bb.model).requires_grad_(True)
    by_hand = GradCAM(
        hand_model, [dict(hand_model.named_modules())[stage]], reshape_transform=_reshape(bb, stage)
    )
    targets = [ClassifierOutputTarget(TARGET)]
    module = dict(bb.model.named_modules())[next(s.module for s in bb.all_stages if s.name == stage)]
    methods = [
        Method("floor", _floor(bb.model, module, x)),
        Method("explorer", lambda: explorer.cam(bb, x, stage=stage, target=TARGET)),
        Method("grad-cam by hand", lambda: by_hand(x, targets=targets)),
    ]
    timings = run_interleaved(methods, repeats=repeats, warmup=2, sync=device_sync(device))
    medians = {name: t.median_ms for name, t in timings.items()}
    by_hand.activations_and_grads.release()
    return {
        "model": spec,
        "stage": stage,
        "input": list(bb.preprocess.input_size),
        "methods": {name: t.to_dict() for name, t in timings.items()},
        "explorer_vs_floor": medians["explorer"] / medians["floor"],
        "explorer_vs_by_hand": medians["explorer"] / medians["grad-cam by hand"],
    }


def leaks(device: torch.device, calls: int) -> dict:
    bb = explorer.load_backbone("resnet18", pretrained=False, device=device)
    x = torch.randn(2, 3, 64, 64, device=device)

    def hooks() -> int:
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in bb.model.modules())

    explorer.cam(bb, x, stage="layer3")
    gc.collect()
    before_hooks = hooks()
    cuda = device.type == "cuda"
    before_cuda = torch.cuda.memory_allocated() if cuda else None
    tracemalloc.start()
    start = tracemalloc.take_snapshot()
    for _ in range(calls):
        explorer.cam(bb, x, stage="layer3")
    gc.collect()
    growth = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(start, "filename"))
    tracemalloc.stop()
    return {
        "calls": calls,
        "hooks_before": before_hooks,
        "hooks_after": hooks(),
        "python_growth_bytes": growth,
        "cuda_growth_bytes": torch.cuda.memory_allocated() - before_cuda if cuda else None,
        "grads_left": sum(p.grad is not None for p in bb.model.parameters()),
    }


def _markdown(results: dict) -> str:
    env = results["environment"]
    lines = [
        "# CAM benchmark",
        "",
        f"{env['date']}, `{env['command']}`, {env['device']} ({env['gpu'] or env['cpu']}), "
        f"{env['torch_threads']} threads{', quick run' if results['quick'] else ''}. Random weights (the default: "
        "its ImageNet weights), batch 1, medians of interleaved calls (IQR in brackets).",
        "",
        "| model | stage | floor: forward + backward to the stage | explorer.cam | grad-cam by hand | "
        "explorer / floor (target <= 1.2) | explorer / by hand (target <= 1.0) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["timing"]:
        cells = [f"{m['median_ms']:.1f} ms ({m['iqr_ms']:.1f})" for m in row["methods"].values()]
        lines.append(
            f"| {row['model']} | {row['stage']} | {' | '.join(cells)} | {row['explorer_vs_floor']:.2f}x | "
            f"{row['explorer_vs_by_hand']:.2f}x |"
        )
    leak = results["leaks"]
    lines += [
        "",
        f"Leaks: {leak['calls']} calls on resnet18 (batch 2, 64x64, layer3): hooks {leak['hooks_before']} -> "
        f"{leak['hooks_after']}, Python memory growth {leak['python_growth_bytes'] / 1024:.0f} KiB, "
        f"weight gradients left {leak['grads_left']}"
        + (
            f", CUDA memory growth {leak['cuda_growth_bytes'] / 1024:.0f} KiB"
            if leak["cuda_growth_bytes"] is not None
            else ""
        )
        + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cam", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    command = "python -m benchmarks.cam " + " ".join(sys.argv[1:] if argv is None else argv)
    repeats = 5 if args.quick else 30
    results = {
        "environment": report.environment(args.device, args.threads, command.strip()),
        "quick": args.quick,
        "timing": [timing(spec, MODELS[spec], device, repeats) for spec in args.models],
        "leaks": leaks(device, 100 if args.quick else 1000),
    }
    suffix = f"_{args.device}" if args.device != "cpu" else ""
    (args.out / f"cam_results{suffix}.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / f"CAM_RESULTS{suffix.upper()}.md").write_text(_markdown(results))
    print(_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
