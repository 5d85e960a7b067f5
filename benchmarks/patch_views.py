"""``python -m benchmarks.patch_views``: PCA and similarity from a captured map, attention against one forward.

- PCA and similarity on a captured ``(8, 768, 32, 32)`` map (a ViT-B stage on 512x512 inputs, 8 images),
  laid out as explorer captures a ViT's tokens (a view of ``(8, 1 + 1024, 768)`` tokens without the class
  token): the joint fit, the fit with the foreground pass, colouring with a fit made before (``fit=``), and
  one similarity query; no forward pass in any of them. The tokens mix 64 latent factors whose scale falls
  by 0.85 each, plus noise: a spectrum that falls as pretrained features' does (the randomized solver
  converges). The same fit on flat noise (random weights' spectrum) takes the exact covariance path: a row
  of its own.
- ``explorer.attention`` (fused attention off, the last block, and with rollout) against one plain forward pass
  of the model (fused attention on), interleaved, random weights, 224x224, batch 1.

Options::

    --threads N        torch CPU threads (default 2)
    --repeats N        timed calls per method (default 15)
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import explorer  # noqa: E402
from explorer.hooks import FeatureMaps  # noqa: E402

from .timing import Method, run_interleaved  # noqa: E402

__all__ = ["main"]

VITS = ("vit_tiny_patch16_224", "vit_small_patch16_224", "deit_small_distilled_patch16_224")


def _table(title: str, timings, baseline: str | None = None) -> None:
    print(title)
    base = timings[baseline].median_ms if baseline else None
    for name, timing in timings.items():
        ratio = f"  {timing.median_ms / base:.2f}x" if base else ""
        print(f"  {name:<28} {timing.median_ms:8.1f} ms (IQR {timing.iqr_ms:.1f}){ratio}")


def _vit_map(decay: float) -> torch.Tensor:
    """``(8, 768, 32, 32)``: a view of ``(8, 1 + 1024, 768)`` ViT tokens, class token left out (as captured)."""
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(8 * 1025, 64, generator=generator) * decay ** torch.arange(64.0) * 5
    mixed = latent @ torch.randn(64, 768, generator=generator) + 0.3 * torch.randn(
        8 * 1025, 768, generator=generator
    )
    return mixed.reshape(8, 1025, 768)[:, 1:].transpose(1, 2).reshape(8, 768, 32, 32)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.patch_views")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bb = explorer.load_backbone("resnet18", pretrained=False, device="cpu")  # only a Backbone to call with
    maps = FeatureMaps({"stage": _vit_map(decay=0.85)})
    flat = FeatureMaps({"stage": _vit_map(decay=1.0)})
    basis = explorer.pca(bb, maps).basis
    methods = [
        Method("pca (joint fit)", lambda: explorer.pca(bb, maps)),
        Method("pca foreground='auto'", lambda: explorer.pca(bb, maps, foreground="auto")),
        Method("pca fit=basis", lambda: explorer.pca(bb, maps, fit=basis)),
        Method("similarity", lambda: explorer.similarity(bb, maps, query=(0, 5, 7))),
        Method("pca (joint fit), flat spectrum", lambda: explorer.pca(bb, flat)),
    ]
    timings = run_interleaved(methods, repeats=args.repeats, warmup=2)
    _table(f"captured (8, 768, 32, 32), {args.threads} threads", timings)
    x = torch.randn(1, 3, 224, 224)
    for spec in VITS:
        vit = explorer.load_backbone(spec, pretrained=False, device="cpu")

        def forward(model=vit.model):
            with torch.inference_mode():
                model(x)

        methods = [
            Method("forward (fused attention)", forward),
            Method("attention, last block", lambda vit=vit: explorer.attention(vit, x)),
            Method("attention + rollout", lambda vit=vit: explorer.attention(vit, x, rollout=True)),
        ]
        _table(spec, run_interleaved(methods, repeats=args.repeats, warmup=2), "forward (fused attention)")


if __name__ == "__main__":
    main()
