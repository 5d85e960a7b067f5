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

- The panel, kernel side (``Explorer(display=False)``: the engine works in the caller's thread): a camera frame
  (a 320x240 JPEG, as the browser sends) from its arrival to the frame drawn and acknowledged, with the default
  model, in the Patches tab's PCA and Similarity modes and in the Grid tab: frames drawn a second; and a
  similarity click (``patch_query`` set) until its maps are drawn. The rates in the browser (camera pictures a
  second, a similarity click settled) are ``benchmarks.browser``'s, in the same ``python -m benchmarks`` run.

Options::

    --threads N        torch CPU threads (default 2)
    --repeats N        timed calls per method (default 15)
    --out DIR          where ``patch_views.json`` (every median, stamped with the revision) goes
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
from explorer.hooks import FeatureMaps  # noqa: E402

from . import report  # noqa: E402
from .timing import Method, run_interleaved  # noqa: E402

__all__ = ["main"]

VITS = ("vit_tiny_patch16_224", "vit_small_patch16_224", "deit_small_distilled_patch16_224")


def _table(title: str, timings, baseline: str | None = None) -> dict[str, float]:
    """Print the timings (with ratios to ``baseline``); their medians in ms, for the results file."""
    print(title)
    base = timings[baseline].median_ms if baseline else None
    for name, timing in timings.items():
        ratio = f"  {timing.median_ms / base:.2f}x" if base else ""
        print(f"  {name:<28} {timing.median_ms:8.1f} ms (IQR {timing.iqr_ms:.1f}){ratio}")
    return {name: timing.median_ms for name, timing in timings.items()}


def _vit_map(decay: float) -> torch.Tensor:
    """``(8, 768, 32, 32)``: a view of ``(8, 1 + 1024, 768)`` ViT tokens, class token left out (as captured)."""
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(8 * 1025, 64, generator=generator) * decay ** torch.arange(64.0) * 5
    mixed = latent @ torch.randn(64, 768, generator=generator) + 0.3 * torch.randn(
        8 * 1025, 768, generator=generator
    )
    return mixed.reshape(8, 1025, 768)[:, 1:].transpose(1, 2).reshape(8, 768, 32, 32)


def _jpeg(index: int) -> bytes:
    """A 320x240 JPEG of a bright disc at a position that moves with ``index`` (a camera frame)."""
    import io

    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:240, 0:320]
    pixels = np.repeat((x * 200 // 320 + 20).astype(np.uint8)[..., None], 3, axis=2)
    pixels[(x - 40 - index * 8 % 240) ** 2 + (y - 120) ** 2 < 40**2] = (235, 200, 40)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=80)
    return out.getvalue()


def _panel(repeats: int) -> dict[str, float]:
    """Camera frames drawn a second by the panel, and a similarity click, kernel side, default model."""
    import itertools

    app = explorer.Explorer(device="cpu", display=False)
    app.camera_button.value = True
    camera, acks = app.camera, []
    camera.send = lambda content, buffers=None: acks.append(content)
    frames = [_jpeg(i) for i in range(8)]
    seq = itertools.count()

    def frame() -> None:
        number = next(seq)
        camera._on_message(camera, {"event": "frame", "seq": number}, [frames[number % len(frames)]])
        assert acks[-1] == {"ack": number}, "the frame was not drawn"

    queries = (
        (i % 6, r, c) for i, (r, c) in enumerate(itertools.product(range(7), repeat=2))
    )  # no repeats: no cache
    medians = {}
    for tab, mode in (("Patches", "pca"), ("Patches", "similarity"), ("Grid", "pca")):
        app.tab, app.patch_mode = tab, mode
        timing = run_interleaved([Method("frame", frame)], repeats=repeats, warmup=2)["frame"]
        medians[f"camera frame, {tab} {mode}" if tab == "Patches" else "camera frame, Grid"] = (
            timing.median_ms
        )
        print(
            f"  camera frame -> drawn, {tab} {mode:<10} {timing.median_ms:8.1f} ms (IQR {timing.iqr_ms:.1f})"
            f"  {1000 / timing.median_ms:.1f} frames/s"
        )
    app.tab, app.patch_mode = "Patches", "similarity"

    def click() -> None:
        app.patch_query = next(queries)
        assert app.views["Patches"].result.query == tuple(app.patch_query)

    timing = run_interleaved([Method("click", click)], repeats=repeats, warmup=3)["click"]
    print(f"  similarity click -> drawn     {timing.median_ms:8.1f} ms (IQR {timing.iqr_ms:.1f})")
    return {**medians, "similarity click": timing.median_ms}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.patch_views")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent, help="where patch_views.json goes"
    )
    args = parser.parse_args(argv)
    command = "python -m benchmarks.patch_views " + " ".join(sys.argv[1:] if argv is None else argv)
    results: dict = {
        "environment": report.environment("cpu", args.threads, command.strip()),
        "repeats": args.repeats,
    }
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
    results["captured_ms"] = _table(f"captured (8, 768, 32, 32), {args.threads} threads", timings)
    print(
        f"the panel, kernel side, default model, {len(explorer.sample_images())} sample images + the camera frame"
    )
    results["panel_ms"] = _panel(args.repeats)
    results["attention"] = {}
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
        medians = _table(
            spec, run_interleaved(methods, repeats=args.repeats, warmup=2), "forward (fused attention)"
        )
        results["attention"][spec] = medians
    path = args.out / "patch_views.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
