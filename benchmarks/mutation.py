"""``python -m benchmarks.mutation``: break one line in each core module on purpose and check that a test fails.

Each mutation replaces one exact source line (it must occur once, so a stale mutation is reported, not silently
skipped) in a copy of the package, then runs the tests that guard that module against the copy. A mutation that
no test notices is a hole in the suite. Results go to ``MUTATION_RESULTS.md`` beside this file.

Options::

    --only MODULE ...   a subset, by module path (explorer/stats.py); printed only, the results file is kept
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    module: str  # path from the repository root
    line: str  # an exact source fragment, found once
    broken: str  # what it becomes
    tests: tuple[str, ...]  # pytest selections that should fail
    what: str  # the defect, in words


MUTATIONS = (
    Mutation(
        "explorer/stages.py",
        "        out_indices = [len(stage_names) - 1]",
        "        out_indices = [len(stage_names) - 2]",
        ("tests/test_stages.py",),
        "neither selection given: the last stage but one instead of the last",
    ),
    Mutation(
        "explorer/stats.py",
        "    return np.lexsort((np.arange(values.size), key, nan))",
        "    return np.lexsort((-np.arange(values.size), key, nan))",
        ("tests/test_stats.py",),
        "ties in a ranking broken by the higher channel index",
    ),
    Mutation(
        "explorer/histograms.py",
        "        edges=np.linspace(low, high, int(bins) + 1),",
        "        edges=np.linspace(low, high, int(bins)),",
        ("tests/test_stats.py", "tests/test_figures.py"),
        "one histogram edge too few",
    ),
    Mutation(
        "explorer/arrays.py",
        "    while values.ndim > 2 and values.shape[0] == 1:",
        "    while values.ndim > 2:",
        ("tests/test_render.py", "tests/test_hardening.py"),
        "a channel map with several leading channels silently takes the first",
    ),
    Mutation(
        "explorer/render/channels.py",
        "        return list(range(page * size, min((page + 1) * size, num_channels)))",
        "        return list(range(page * size, min((page + 1) * size, num_channels) - 1))",
        ("tests/test_render.py",),
        "a page drops its last channel",
    ),
    Mutation(
        "explorer/render/ranges.py",
        "    index = torch.addcmul(0.5 - low * scale, values, scale).clamp_(0.0, 255.0)",
        "    index = torch.addcmul(-low * scale, values, scale).clamp_(0.0, 255.0)",
        ("tests/test_render.py",),
        "values truncated to colours instead of rounded",
    ),
    Mutation(
        "explorer/render/colormaps.py",
        "    return packed.contiguous().view(torch.uint8).unflatten(-1, (-1, 4))[..., :3]",
        "    return packed.contiguous().view(torch.uint8).unflatten(-1, (-1, 4))[..., [2, 1, 0]]",
        ("tests/test_render.py",),
        "colours unpacked as BGR",
    ),
    Mutation(
        "explorer/render/grid.py",
        "        return self.channels[position], dy * self.map_size[0] // height, dx * self.map_size[1] // width",
        "        return self.channels[position], dx * self.map_size[1] // width, dy * self.map_size[0] // height",
        ("tests/test_render.py", "tests/test_panel.py"),
        "a click's row and column swapped",
    ),
    Mutation(
        "explorer/render/overlay.py",
        '        values[None, None], size=pixels.shape[:2], mode="bilinear", align_corners=False',
        '        values[None, None], size=pixels.shape[:2], mode="bilinear", align_corners=True',
        ("tests/test_render.py",),
        "the overlay upsampled with corners aligned (shifted by half a cell)",
    ),
    Mutation(
        "explorer/render/png.py",
        "    raw[:, 0] = 0",
        "    raw[:, 0] = 1",
        ("tests/test_render.py",),
        "every PNG row declared Sub-filtered",
    ),
    Mutation(
        "explorer/dataset/fields.py",
        "    center_y, center_x = (row + 0.5) * height / rows, (col + 0.5) * width / cols",
        "    center_y, center_x = (row + 1.0) * height / rows, (col + 1.0) * width / cols",
        ("tests/test_receptive_fields.py",),
        "every receptive-field box shifted by half a cell",
    ),
    Mutation(
        "explorer/dataset/fields.py",
        "MASS = 0.9",
        "MASS = 0.45",
        ("tests/test_receptive_fields.py",),
        "the receptive field holds half the gradient mass",
    ),
    Mutation(
        "explorer/vocabulary.py",
        "    return -(-count // page_size) if page_size else 0",
        "    return count // page_size if page_size else 0",
        ("tests/test_render.py", "tests/test_panel_controller.py"),
        "a last, shorter page is not counted",
    ),
    Mutation(
        "explorer/_args.py",
        "    if isinstance(value, bool) or not integral:",
        "    if not integral:",
        ("tests/test_args.py",),
        "True accepted as a count",
    ),
    Mutation(
        "explorer/layouts.py",
        "                    return prefix, h, w",
        "                    return prefix + 1, h, w",
        ("tests/test_layouts.py",),
        "one prefix token too many when a token output is laid out as a grid",
    ),
    Mutation(
        "explorer/hooks.py",
        "            if stop_early and len(outputs) == len(names):",
        "            if stop_early and outputs:",
        ("tests/test_layouts.py", "tests/test_timm_backbones.py"),
        "the forward pass stopped after the first requested layer instead of the last",
    ),
    Mutation(
        "explorer/backbones/timm.py",
        "        return int(count) if isinstance(count, int) else None",
        "        return int(count) + 1 if isinstance(count, int) else None",
        ("tests/test_layouts.py", "tests/test_timm_backbones.py"),
        "a timm ViT's prefix-token count off by one",
    ),
    Mutation(
        "explorer/backbones/_hf_model.py",
        "        reduction = max(1, round(height / fmap.shape[-2]))",
        "        reduction = max(1, round(height / fmap.shape[-2])) * 2",
        ("tests/test_hf_backbones.py",),
        "a transformers stage's stride doubled",
    ),
    Mutation(
        "explorer/backbones/_timm_preprocess.py",
        "            self.transform = timm.data.create_transform(**config, is_training=False)",
        '            self.transform = timm.data.create_transform(**{**config, "mean": (0.0,) * 3, "std": (1.0,) * 3}, is_training=False)',
        ("tests/test_oracle_preprocess.py",),
        "timm preprocessing that skips normalisation",
    ),
    Mutation(
        "explorer/images.py",
        "            upright = ImageOps.exif_transpose(image)",
        "            upright = image",
        ("tests/test_images.py",),
        "a photo's EXIF orientation ignored",
    ),
    Mutation(
        "explorer/class_activation.py",
        "        indices = [int(scores[b].argmax()) if i is None else i for b, i in enumerate(indices)]",
        "        indices = [int(scores[b].argmin()) if i is None else i for b, i in enumerate(indices)]",
        ("tests/test_cam.py::test_the_default_explains_chelsea_as_a_cat",),
        "target=None explains the least likely class instead of the top prediction",
    ),
    Mutation(
        "explorer/cam_gradcam.py",
        "                scores = nchw.mean((1, 2, 3))[:, None] if total else nchw.mean((2, 3))",
        "                scores = -nchw.mean((1, 2, 3))[:, None] if total else nchw.mean((2, 3))",
        ("tests/test_cam.py::test_headless_total_activation_equals_grad_cam_by_hand",),
        "a headless CAM of the total activation explains its negative (gradients and weights flip sign)",
    ),
    Mutation(
        "explorer/dataset/reduce.py",
        "    by_image = torch.sort(images, dim=1, stable=True).indices",
        "    by_image = torch.sort(-images, dim=1, stable=True).indices",
        ("tests/test_scan.py::test_ties_break_by_image_order",),
        "the top-k's ties broken by the later image instead of the earlier",
    ),
    Mutation(
        "explorer/dataset/reduce.py",
        "        best, cells = flat.nan_to_num(nan=-math.inf).max(-1)  # (B, C): the first cell holding the maximum",
        "        best, cells = flat.nan_to_num(nan=-math.inf).min(-1)  # (B, C): the first cell holding the maximum",
        ("tests/test_scan.py",),
        "each image's exemplar value is the channel's minimum, not its maximum",
    ),
    Mutation(
        "explorer/concept_discovery.py",
        "    energy = codes.pow(2).sum(0) * dictionary.basis.pow(2).sum(1)",
        "    energy = codes.pow(2).sum(0)",
        ("tests/test_concepts.py",),
        "a concept's share of the energy ignores the length of its direction",
    ),
    Mutation(
        "explorer/dataset/store.py",
        '        top = top.sort_by([("channel", "ascending"), ("rank", "ascending")])',
        '        top = top.sort_by([("channel", "ascending"), ("rank", "descending")])',
        ("tests/test_scan.py",),
        "a shard read back from Parquet lists each channel's exemplars worst first",
    ),
    Mutation(
        "explorer/preprocessing.py",
        "    if max(width, height) > image_input.MAX_ASPECT * min(width, height):",
        "    if max(width, height) > 2 * image_input.MAX_ASPECT * min(width, height):",
        ("tests/test_reliability.py",),
        "the aspect-ratio guard lets through images twice as long as its limit",
    ),
    Mutation(
        "explorer/attention_maps.py",
        "        hat.diagonal().add_(1)  # + I: the residual path",
        "        pass  # the residual path forgotten",
        ("tests/test_attention_maps.py",),
        "attention rollout without the identity (the residual path)",
    ),
    Mutation(
        "explorer/patch_views.py",
        "    ranked[image, row, col] = -torch.inf  # the query itself does not count as its own image's match",
        "    pass  # the query counts as its own image's match",
        ("tests/test_patch_views.py",),
        "similarity's best match in the query's own image is the query itself",
    ),
    Mutation(
        "explorer/feature_images.py",
        "    return (1.0 / _freqs(height, width).clamp_min(1.0 / max(height, width)) ** decay_power).float()",
        "    return (1.0 / _freqs(height, width).clamp_min(1.0 / max(height, width)) ** (2 * decay_power)).float()",
        ("tests/test_feature_vis.py",),
        "the spectrum scaled by 1/f^2 instead of Lucid's 1/f",
    ),
)


def _copy(target: Path) -> None:
    for name in ("explorer", "tests", "pyproject.toml", "conftest.py"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__", "artifacts"))
        elif source.exists():
            shutil.copy2(source, target / name)


def _run(mutation: Mutation) -> dict:
    with tempfile.TemporaryDirectory(prefix="explorer-mutant-") as folder:
        copy = Path(folder)
        _copy(copy)
        path = copy / mutation.module
        source = path.read_text()
        found = source.count(mutation.line)
        if found != 1:
            return {"status": f"stale: the line occurs {found} times", "seconds": 0.0}
        path.write_text(source.replace(mutation.line, mutation.broken))
        env = {**os.environ, "PYTHONPATH": str(copy), "HF_HUB_OFFLINE": "1"}
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutation.tests],
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        seconds = time.perf_counter() - started
        failed = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
        if done.returncode == 1 and failed:
            return {"status": "caught", "by": failed[0].split(" ", 1)[1].split(" - ")[0], "seconds": seconds}
        if done.returncode == 0:
            return {"status": "MISSED: every test passed", "seconds": seconds}
        return {
            "status": f"broken run (exit {done.returncode})",
            "seconds": seconds,
            "tail": done.stdout[-400:],
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.mutation", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--only", nargs="+", help="module paths to mutate")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.module in args.only]
    revision = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    rows = []
    for mutation in chosen:
        result = _run(mutation)
        print(f"{result['status']:<30} {mutation.module}: {mutation.what}", flush=True)
        rows.append((mutation, result))
    lines = [
        "# Mutation check: one line broken on purpose per core module, and the test that notices",
        "",
        f"- Command: `python -m benchmarks.mutation`; revision {revision or '?'}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- Caught: {sum(r['status'] == 'caught' for _, r in rows)} of {len(rows)}",
        "",
        "| module | the defect | result | first failing test |",
        "|---|---|---|---|",
    ]
    for mutation, result in rows:
        lines.append(
            f"| `{mutation.module}` | {mutation.what} | {result['status']} | {result.get('by', '')} |"
        )
    if not args.only:  # a subset is a check, not the record
        (args.out / "MUTATION_RESULTS.md").write_text("\n".join(lines) + "\n")
    return 0 if all(r["status"] == "caught" for _, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
