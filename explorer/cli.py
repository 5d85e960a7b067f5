"""The ``explorer`` command: stage tables, grids and statistics from the shell, and the panel in JupyterLab.

Example::

    $ explorer stages resnet50 --random
    $ explorer render default cat.jpg --stage blocks.2 --channels top:32 --out grid.png
    $ explorer stats default cat.jpg --stage blocks.2 --csv blocks2.csv
    $ explorer scan default photos/ --stage blocks.2 --k 9 --out report/
    $ explorer concepts default photos/ --stage blocks.4 --n-concepts 16 --method semi-nmf --out concepts/
    $ explorer cam default cat.jpg --stage blocks.6 --target "tabby cat" --out cam.png
    $ explorer pca default cat.jpg dog.jpg --stage blocks.5 --foreground auto --out pca.png
    $ explorer similarity default cat.jpg dog.jpg --stage blocks.5 --query 0,5,7 --out similarity.png
    $ explorer attention vit_small_patch16_224 cat.jpg --block -1 --rollout --out attention.png
    $ explorer visualize default --stage blocks.4 --channel 3,5 --steps 256 --out vis/
    $ explorer lab
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .vocabulary import DIVERGING_CMAP, MAP_CMAP

__all__ = ["main"]

_log = logging.getLogger(__name__)

USER_ERROR = 2
"""The exit status for a user's mistake (argparse's own for bad arguments)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad argument reported in one line (``explorer <command>: <message>``), as every other
    mistake is, instead of the usage block."""

    def error(self, message: str):
        message = " ".join(message.split())
        self.exit(USER_ERROR, f"{self.prog}: {message[:500]} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="explorer", description="See what a vision backbone sees.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def with_model(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("spec", help='checkpoint: "default", a timm name, "hf:...", "hf-hub:...", a path')
        sub.add_argument("--random", action="store_true", help="random weights instead of pretrained ones")
        sub.add_argument("--arch", help="timm architecture of a bare weights file")
        sub.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")

    stages = commands.add_parser("stages", help="print every stage: channels, stride and output shape")
    with_model(stages)

    for name, text in (
        ("render", "write a PNG grid of a stage's channels"),
        ("stats", "per-channel statistics"),
    ):
        sub = commands.add_parser(name, help=text)
        with_model(sub)
        sub.add_argument("image", help="an image file")
        sub.add_argument("--stage", help="stage or layer name (default: the last stage)")
        if name == "render":
            sub.add_argument(
                "--channels", default="first:64", help="all, first:K, top:K, page:P/S (default first:64)"
            )
            sub.add_argument(
                "--norm", default="channel", help="channel, stage or symmetric (default channel)"
            )
            sub.add_argument(
                "--cmap",
                default=None,
                help=f"a matplotlib colour map (default {MAP_CMAP}; {DIVERGING_CMAP} with --norm symmetric)",
            )
            sub.add_argument(
                "--out", default="grid.png", help="the image to write: .png or .jpg (default grid.png)"
            )
        else:
            sub.add_argument("--csv", help="also write the table as CSV")

    _scan_parser(commands.add_parser("scan", help="top-k exemplars of every channel over a folder of images"))
    _concepts_parser(
        commands.add_parser(
            "concepts", help="learn a stage's concepts over a folder of images, with exemplars"
        )
    )
    _cam_parser(
        commands.add_parser("cam", help="write a class-activation map of a stage over the image"), with_model
    )
    _visualize_parser(
        commands.add_parser("visualize", help="write the image each channel responds to most (optimised)"),
        with_model,
    )

    _patch_parsers(commands, with_model)

    lab = commands.add_parser("lab", help="open the explorer notebook in JupyterLab")
    lab.add_argument("--notebook", default="notebooks/explorer.ipynb", help="notebook to open")
    return parser


def _scan_parser(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("spec", help='checkpoint: "default", a timm name, "hf:...", "hf-hub:...", a path')
    sub.add_argument("source", help="a folder of images (recursive)")
    sub.add_argument("--stage", nargs="+", help="stage names to scan (default: the last stage)")
    sub.add_argument("--layer", nargs="+", help="named layers to scan as well (see explorer.list_layers)")
    sub.add_argument("--k", type=int, default=9, help="exemplars per channel (default 9)")
    sub.add_argument("--out", default="scan-report", help="folder of the HTML report (default scan-report)")
    sub.add_argument("--backend", choices=("local", "ray"), default="local", help="local (default) or ray")
    sub.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    sub.add_argument("--cache", default="~/.cache/explorer/scans", help="cache folder (resumable scans)")
    sub.add_argument("--no-cache", action="store_true", help="keep the scan in memory only")
    sub.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    sub.add_argument("--workers", type=int, default=2, help="DataLoader processes reading images (default 2)")
    sub.add_argument("--random", action="store_true", help="random weights instead of pretrained ones")
    sub.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    sub.add_argument(
        "--visualize",
        action="store_true",
        help="put each channel's optimised image (explorer.visualize) beside its exemplars in the report",
    )
    sub.add_argument("--vis-steps", type=int, default=256, help="optimisation steps with --visualize (256)")
    sub.add_argument("--vis-size", type=int, default=128, help="image side with --visualize (default 128)")


def _run_scan(args: argparse.Namespace) -> None:
    from .dataset import scan

    result = scan(
        args.spec,
        args.source,
        out_features=args.stage,
        layers=args.layer,
        k=args.k,
        cache=None if args.no_cache else args.cache,
        backend=args.backend,
        address=args.address,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device,
        pretrained=not args.random,
    )
    index = result.save_html(
        args.out, visualize=args.visualize, vis_steps=args.vis_steps, vis_size=args.vis_size
    )
    print(f"{index}: {result}")
    for source, reason in result.skipped:
        print(f"skipped {source}: {reason}")


def _concepts_parser(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("spec", help='checkpoint: "default", a timm name, "hf:...", "hf-hub:...", a path')
    sub.add_argument("source", help="a folder of images (recursive)")
    sub.add_argument("--stage", help="stage name (default: the last stage)")
    sub.add_argument(
        "--n", "--n-concepts", dest="n_concepts", type=int, default=32, help="concepts to learn (default 32)"
    )
    sub.add_argument(
        "--method", default="nmf", help="nmf (non-negative stages), semi-nmf or topk-sae (default nmf)"
    )
    sub.add_argument("--k", type=int, default=9, help="exemplars per concept (default 9)")
    sub.add_argument("--seed", type=int, default=0, help="seed of the sample and the fit (default 0)")
    sub.add_argument(
        "--out", default="concepts-report", help="folder of the HTML report (default concepts-report)"
    )
    sub.add_argument("--backend", choices=("local", "ray"), default="local", help="local (default) or ray")
    sub.add_argument("--cache", default="~/.cache/explorer/scans", help="cache folder (resumable)")
    sub.add_argument("--no-cache", action="store_true", help="keep everything in memory only")
    sub.add_argument("--random", action="store_true", help="random weights instead of pretrained ones")
    sub.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")


def _run_concepts(args: argparse.Namespace) -> None:
    from .concept_discovery import concepts

    result = concepts(
        args.spec,
        args.source,
        stage=args.stage,
        n_concepts=args.n_concepts,
        method=args.method,
        k=args.k,
        seed=args.seed,
        cache=None if args.no_cache else args.cache,
        backend=args.backend,
        device=args.device,
        pretrained=not args.random,
    )
    index = result.save_html(args.out)
    print(f"{index}: {result}")
    for warning in result.warnings:
        print(f"warning: {warning}")


def _cam_parser(sub: argparse.ArgumentParser, with_model) -> None:
    with_model(sub)
    sub.add_argument("image", help="an image file")
    sub.add_argument("--stage", help="stage or layer name (default: the last stage)")
    sub.add_argument(
        "--target",
        help='class index or name ("tabby cat"); headless: channel or "stage:channel" (default: top)',
    )
    sub.add_argument(
        "--method", default="gradcam", help="a grad-cam method (default gradcam; see cam_methods())"
    )
    sub.add_argument("--alpha", type=float, default=0.5, help="the map's weight over the image (default 0.5)")
    sub.add_argument("--out", default="cam.png", help="the image to write: .png or .jpg (default cam.png)")


def _run_cam(args: argparse.Namespace) -> None:
    from .class_activation import cam
    from .export import save_image
    from .render import overlay

    bb = _backbone(args)
    digits = args.target is not None and args.target.isascii() and args.target.isdigit()
    target = int(args.target) if digits else args.target
    result = cam(bb, args.image, stage=args.stage, target=target, method=args.method)
    save_image(overlay(args.image, result.map, alpha=args.alpha, preprocess=bb.preprocess), args.out)
    top = ", ".join(f"{name} {p:.2f}" for _, name, p in result.top5[:3])
    print(
        f"{args.out}: {result.method} at {result.stage} for {result.target_name}"
        + (f" (top: {top})" if top else "")
    )


def _patch_parsers(commands, with_model) -> None:
    pca = commands.add_parser("pca", help="write the PCA colours of a stage's locations over several images")
    similarity = commands.add_parser(
        "similarity", help="write the cosine similarity of every location to one query location"
    )
    for sub in (pca, similarity):
        with_model(sub)
        sub.add_argument("images", nargs="+", help="image files")
        sub.add_argument("--stage", help="stage or layer name (default: the last stage)")
    pca.add_argument("--foreground", help='fit on the foreground only: "auto" (Otsu) or a threshold')
    pca.add_argument("--out", default="pca.png", help="the PNG figure to write (default pca.png)")
    similarity.add_argument("--query", required=True, help="image,row,col on the stage's grid, e.g. 0,5,7")
    similarity.add_argument("--out", default="similarity.png", help="the PNG figure to write")
    attention = commands.add_parser("attention", help="write a ViT's class-token attention per head")
    with_model(attention)
    attention.add_argument("image", help="an image file")
    attention.add_argument("--block", help="a block name (blocks.11, stage12) or index (default: the last)")
    attention.add_argument("--rollout", action="store_true", help="add attention rollout up to the block")
    attention.add_argument("--out", default="attention.png", help="the PNG figure to write")


def _query(text: str) -> tuple[int, int, int]:
    from .errors import InvalidArgumentError

    parts = text.split(",")
    if len(parts) != 3 or not all(part.isascii() and part.strip().lstrip("-").isdigit() for part in parts):
        raise InvalidArgumentError(
            f"--query {text!r}: pass image,row,col as three whole numbers, e.g. 0,5,7."
        )
    return tuple(int(part) for part in parts)


def _run_patches(args: argparse.Namespace) -> None:
    from . import figures
    from .errors import InvalidArgumentError
    from .images import load_image
    from .preprocessing import model_view

    if Path(args.out).suffix.lower() != ".png":
        raise InvalidArgumentError(f"--out {args.out}: the figure is written as PNG; name a .png file.")
    bb = _backbone(args)
    names = args.images if args.command != "attention" else [args.image]
    images = [load_image(name) for name in names]
    views = [model_view(image, bb.preprocess) for image in images]
    if args.command == "pca":
        from .patch_views import pca

        foreground = args.foreground
        if foreground not in (None, "auto"):
            try:
                foreground = float(foreground)
            except ValueError:
                pass  # pca() names the fix
        result = pca(bb, images, stage=args.stage, foreground=foreground)
        figure = figures.patch_pca_figure(result, views)
        share = float(result.basis.explained_variance_ratio.sum())
        summary = f"PCA of {result.stage}, {len(images)} images, {share:.0%} of the variance"
    elif args.command == "similarity":
        from .patch_views import similarity

        result = similarity(bb, images, stage=args.stage, query=_query(args.query))
        figure = figures.similarity_figure(result, views)
        summary = f"similarity at {result.stage}, best matches {result.best}"
    else:
        from .attention_maps import attention

        digits = args.block and args.block.isascii() and args.block.lstrip("-").isdigit()
        block = int(args.block) if digits else args.block
        result = attention(bb, images[0], block=block, rollout=args.rollout)
        figure = figures.attention_figure(result, views[0])
        shares = ", ".join(f"{float(v):.2f}" for v in result.prefix_share)
        summary = f"attention at {result.block}, prefix share per head {shares}"
    from .files import write_atomic

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_atomic(Path(args.out), buffer.getvalue())
    print(f"{args.out}: {summary}")


def _visualize_parser(sub: argparse.ArgumentParser, with_model) -> None:
    with_model(sub)
    sub.add_argument("--stage", help="stage or layer name (default: the last stage)")
    sub.add_argument("--channel", required=True, help="channel indices, comma-separated: 3 or 3,5,17")
    sub.add_argument("--steps", type=int, default=256, help="optimisation steps (default 256)")
    sub.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    sub.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sub.add_argument("--method", default="fft", help="fft (Lucid) or maco (phase only) (default fft)")
    sub.add_argument("--out", default="visualize", help="folder for the PNGs (default visualize)")


def _run_visualize(args: argparse.Namespace) -> None:
    import numpy as np

    from .errors import InvalidArgumentError
    from .export import save_image
    from .feature_vis import visualize
    from .files import make_folder

    parts = [part.strip() for part in args.channel.split(",")]
    if not all(part.isascii() and part.isdigit() for part in parts):
        raise InvalidArgumentError(
            f"--channel {args.channel}: pass channel indices, comma-separated: 3 or 3,5,17."
        )
    bb = _backbone(args)
    results = visualize(
        bb,
        stage=args.stage,
        channel=[int(part) for part in parts],
        steps=args.steps,
        size=args.size,
        seed=args.seed,
        method=args.method,
        progress=True,
    )
    out = make_folder(Path(args.out))
    for result in results:
        path = out / f"{result.stage}_{result.objective.replace(' ', '')}_{result.method}.png"
        save_image(np.asarray(result.image), path)
        print(f"{path}: {result.stage} {result.objective}, activation {result.activation:.3f}")
    if bb.weights == "random":
        print("note: random weights; these images show nothing the model learnt")


def _backbone(args: argparse.Namespace):
    from .backbones import load_backbone

    options = {"arch": args.arch} if args.arch else {}
    return load_backbone(args.spec, pretrained=not args.random, device=args.device, **options)


def _stage_map(args: argparse.Namespace):
    bb = _backbone(args)
    pixel_values = bb.pixel_values([args.image])
    if args.stage is None or args.stage in bb.stage_names:
        bb.out_features = [args.stage or bb.stage_names[-1]]
        maps = bb(pixel_values)
    else:
        maps = bb.capture(pixel_values, layers=[args.stage])
    name, fmap = next(iter(maps.items()))
    return name, fmap[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    A user's mistake (an :class:`~explorer.ExplorerError` from any subcommand, or a file that cannot be read or
    written) prints one line, ``explorer: <message>``, and returns 2, as argparse does for bad arguments; only a
    real bug prints a traceback.
    """
    from .errors import ExplorerError

    args = _parser().parse_args(argv)
    try:
        if args.command == "stages":
            bb = _backbone(args)
            print(bb.describe())
        elif args.command == "render":
            from .export import save_image
            from .render import render_grid

            name, fmap = _stage_map(args)
            save_image(
                render_grid(fmap, channels=args.channels, norm=args.norm, cmap=args.cmap, labels=True),
                args.out,
            )
            print(f"{args.out}: {name} {tuple(fmap.shape)}")
        elif args.command == "stats":
            from .stats import channel_stats

            name, fmap = _stage_map(args)
            stats = channel_stats(fmap)
            print(f"{name} {tuple(fmap.shape)}: {stats.summary()}")
            if args.csv:
                from .export import stats_to_csv

                stats_to_csv(stats, args.csv)
        elif args.command == "scan":
            _run_scan(args)
        elif args.command == "concepts":
            _run_concepts(args)
        elif args.command == "cam":
            _run_cam(args)
        elif args.command in ("pca", "similarity", "attention"):
            _run_patches(args)
        elif args.command == "visualize":
            _run_visualize(args)
        else:
            import os

            root = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
            os.execvp("jupyter-lab", ["jupyter-lab", *root, str(Path(args.notebook))])
    except (ExplorerError, OSError) as err:  # OSError: a path the user named cannot be read or written
        message = " ".join(str(err).split())  # one line, whatever the message holds
        print(f"explorer: {message}", file=sys.stderr)
        return USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
