"""The comparisons: capture (all stages, first stage, peers), rendering, the panel, and memory.

Every suite returns plain rows (dicts of numbers and strings) that :mod:`benchmarks.report` turns into tables,
targets and a plot. Models are random-init (nothing is downloaded); inputs are 224x224.

Example::

    >>> rows = render_suite(QUICK, shapes=[(16, 8, 8)], repeats=1, warmup=0)
    >>> sorted(rows[0]["methods"])[:2]
    ['NumPy tiling + PIL PNG', 'NumPy tiling + PIL PNG (level 1)']
"""

from __future__ import annotations

import cProfile
import gc
import logging
import pstats
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

import explorer
from explorer.render import render_grid, to_png

from . import peers
from .memory import MEMORY_METHODS, measure_in_subprocess
from .timing import Method, Timing, device_sync, run_interleaved, time_once

__all__ = [
    "BATCHES",
    "FULL",
    "MODELS",
    "QUICK",
    "RENDER_SHAPES",
    "Settings",
    "capture_suite",
    "first_stage_index",
    "memory_suite",
    "panel_suite",
    "render_suite",
]

_log = logging.getLogger(__name__)

T = TypeVar("T")

MODELS = (
    "resnet50",
    "convnext_tiny",
    "tf_efficientnet_lite0",
    "vit_small_patch16_224",
    "swin_tiny_patch4_window7_224",
)
BATCHES = (1, 8)
INPUT_SIZE = 224
RENDER_SHAPES = ((64, 56, 56), (256, 56, 56))

# names of the contenders, as the tables print them
BARE = "bare forward"
OURS_ALL = "explorer: all stages"
HOOKS = "plain forward hooks"
TV_FX = "torchvision FX"
TIMM_ALL = "timm features_only"
TL_RECORD = "TorchLens tl.record"
TL_TRACE = "TorchLens tl.trace"
OURS_FIRST = "explorer: first stage"
TIMM_FIRST = "timm features_only: first stage"
HF_FIRST = "transformers ResNetBackbone"
OURS_RENDER = "explorer: render_grid + to_png"
OURS_GRID = "explorer: render_grid only"
OURS_ONE_THREAD = "explorer: render_grid + to_png, 1 thread"
NUMPY = "NumPy tiling + PIL PNG"
NUMPY_FAST = "NumPy tiling + PIL PNG (level 1)"
MATPLOTLIB = "matplotlib subplot grid"


@dataclass(frozen=True)
class Settings:
    """How many calls each comparison makes.

    Attributes:
        repeats: timed calls per capture method, by batch size.
        warmup: untimed calls per capture method first, by batch size.
        torchlens_repeats: timed calls of each TorchLens mode, by batch size (it is slow).
        trace_batches: batch sizes at which ``tl.trace`` (the slower TorchLens mode) runs.
        render_repeats: timed calls per rendering method.
        matplotlib_repeats: timed calls of the matplotlib grid (seconds each).
        panel_repeats: timed display-only changes of each kind.
        panel_images: timed changes to an uncached image.
        panel_checkpoints: timed changes of each checkpoint kind.
    """

    repeats: dict[int, int]
    warmup: dict[int, int]
    torchlens_repeats: dict[int, int]
    trace_batches: tuple[int, ...]
    render_repeats: int
    matplotlib_repeats: int
    panel_repeats: int
    panel_images: int
    panel_checkpoints: int


FULL = Settings(
    repeats={1: 15, 8: 5},
    warmup={1: 2, 8: 1},
    torchlens_repeats={1: 3, 8: 2},
    trace_batches=(1,),
    render_repeats=15,
    matplotlib_repeats=3,
    panel_repeats=15,
    panel_images=10,
    panel_checkpoints=4,
)
QUICK = Settings(
    repeats={1: 3, 8: 2},
    warmup={1: 1, 8: 1},
    torchlens_repeats={1: 1, 8: 1},
    trace_batches=(1,),
    render_repeats=3,
    matplotlib_repeats=1,
    panel_repeats=3,
    panel_images=2,
    panel_checkpoints=1,
)


def first_stage_index(stage_names: Sequence[str]) -> int:
    """The first stage after the stem: resnets' ``layer1`` (index 1; index 0 ``act1`` is the stem's activation,
    transformers' ``stem``), index 0 for every other family here. It is the map transformers' ResNet backbone
    calls ``stage1``."""
    return stage_names.index("layer1") if "layer1" in stage_names else 0


# ----------------------------------------------------------------------------------------------- capture


def _checked(name: str, run: peers.Capture, x: torch.Tensor, count: int, failures: dict[str, str]) -> bool:
    """Run a peer once (untimed) and check it returned ``count`` maps for the whole batch."""
    try:
        maps = run(x)
    except Exception as err:  # a peer failing on a model is a finding for the report
        failures[name] = peers.error_reason(err)
        return False
    batch = x.shape[0]
    if len(maps) != count or any(not isinstance(t, torch.Tensor) or t.shape[0] != batch for t in maps):
        failures[name] = f"returned {len(maps)} maps, expected {count} of batch {batch}"
        return False
    return True


def _peer(name: str, build: Callable[[], T], failures: dict[str, str]) -> T | None:
    """Build a peer, or note why it cannot run here and return None."""
    try:
        return build()
    except peers.Unavailable as err:
        failures[name] = str(err)
    except Exception as err:
        failures[name] = peers.error_reason(err)
    return None


def _capture_case(model_name: str, batch: int, settings: Settings, device: torch.device) -> dict:
    """Every capture method on one model and batch size, interleaved."""
    bb = explorer.load_backbone(model_name, pretrained=False, device=device)
    every = list(range(len(bb.stage_names)))
    first = first_stage_index(bb.stage_names)
    modules = [stage.module for stage in bb.all_stages]
    x = torch.randn(batch, 3, INPUT_SIZE, INPUT_SIZE, generator=torch.Generator().manual_seed(batch)).to(
        device
    )
    failures: dict[str, str] = {}
    methods: list[Method] = []

    def add(name: str, run: peers.Capture | None, count: int, **options) -> None:
        """Check the method once (it counts as its first warm-up call), then enter it in the comparison."""
        if run is None:
            return
        setup, teardown = options.get("setup"), options.get("teardown")
        if setup:
            setup()
        try:
            ok = _checked(name, run, x, count, failures)
        finally:
            if teardown:
                teardown()
        if ok:
            options["warmup"] = max(0, options.get("warmup", settings.warmup[batch]) - 1)
            methods.append(Method(name, lambda: run(x), **options))

    def ours(indices: list[int]) -> dict:
        return {"setup": lambda: setattr(bb, "out_indices", indices)}

    add(BARE, peers.bare_forward(bb.model), 1)
    add(OURS_ALL, lambda t: list(bb(t).values()), len(every), **ours(every))
    add(HOOKS, peers.plain_hooks(bb.model, modules), len(every))
    add(TV_FX, _peer(TV_FX, lambda: peers.torchvision_fx(bb.model, modules), failures), len(every))
    add(
        TIMM_ALL,
        _peer(TIMM_ALL, lambda: peers.timm_features_only(model_name, every, device), failures),
        len(every),
    )
    torchlens = _peer(TL_RECORD, lambda: peers.TorchLensPeer(bb.model, modules), failures)
    if torchlens is not None:
        hooks = {"setup": torchlens.setup, "teardown": torchlens.teardown, "warmup": 1}
        add(TL_RECORD, torchlens.record, len(every), repeats=settings.torchlens_repeats[batch], **hooks)
        if batch in settings.trace_batches:
            add(
                TL_TRACE,
                torchlens.trace,
                len(every),
                repeats=max(1, settings.torchlens_repeats[batch] - 1),
                **hooks,
            )
    add(OURS_FIRST, lambda t: list(bb(t).values()), 1, **ours([first]))
    add(
        TIMM_FIRST,
        _peer(TIMM_FIRST, lambda: peers.timm_features_only(model_name, [first], device), failures),
        1,
    )
    if model_name == "resnet50":
        add(HF_FIRST, _peer(HF_FIRST, lambda: peers.transformers_resnet50([1], device), failures), 1)

    timings = run_interleaved(methods, settings.repeats[batch], settings.warmup[batch], device_sync(device))
    row = {
        "model": model_name,
        "batch": batch,
        "stages": [bb.stage_names[i] for i in every],
        "first_stage": bb.stage_names[first],
        "first_stage_index": first,
        "methods": {name: timing.to_dict() for name, timing in timings.items()},
        "unavailable": failures,
    }
    return row


def capture_suite(
    settings: Settings, device: torch.device, models: Sequence[str] = MODELS, batches: Sequence[int] = BATCHES
) -> list[dict]:
    """Suites 1-3: bare forward, our capture (all stages and the first), and the peers, per model and batch.

    Returns:
        One row per (model, batch): ``methods`` (name -> timing dict), ``unavailable`` (name -> reason),
        ``stages``, ``first_stage``.
    """
    rows = []
    for model_name in models:
        for batch in batches:
            _log.info("capture: %s, batch %d", model_name, batch)
            rows.append(_capture_case(model_name, batch, settings, device))
            gc.collect()  # the case's models go before the next are built
    return rows


# ----------------------------------------------------------------------------------------------- rendering


def _feature_map(shape: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    """A map that looks like a real one: smooth blobs, rectified (many zeros), fixed seed."""
    channels, height, width = shape
    coarse = torch.randn(
        1, channels, max(1, height // 4), max(1, width // 4), generator=torch.Generator().manual_seed(0)
    )
    smooth = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0]
    return smooth.relu_().to(device)


def render_suite(
    settings: Settings,
    device: torch.device | str = "cpu",
    shapes: Sequence[tuple[int, int, int]] = RENDER_SHAPES,
    repeats: int | None = None,
    warmup: int = 2,
) -> list[dict]:
    """Suite 4: one map to PNG bytes, ours against NumPy tiling and matplotlib's subplot grid.

    Args:
        settings: repeat counts.
        device: where the map lives (ours renders there; the peers copy it to the CPU, inside the timing).
        shapes: ``(C, H, W)`` of the maps.
        repeats: overrides the settings' counts for every method (the smoke test uses 1).
        warmup: untimed calls per method first.

    Returns:
        One row per shape: ``shape``, ``methods`` (name -> timing dict), ``png_bytes`` (name -> size).
    """
    device = torch.device(device)
    rows = []
    for shape in shapes:
        _log.info("render: %s", shape)
        fmap = _feature_map(shape, device)
        contenders = {
            OURS_RENDER: lambda fmap=fmap: to_png(render_grid(fmap, norm="channel", cmap="viridis")),
            OURS_GRID: lambda fmap=fmap: render_grid(fmap, norm="channel", cmap="viridis"),
            NUMPY: lambda fmap=fmap: peers.numpy_grid(fmap),
            NUMPY_FAST: lambda fmap=fmap: peers.numpy_grid(fmap, compress_level=1),
            MATPLOTLIB: lambda fmap=fmap: peers.matplotlib_grid(fmap),
        }
        threads = torch.get_num_threads()
        one_thread: dict[str, dict] = {}
        if (
            device.type == "cpu" and threads > 1
        ):  # how much the torch thread pool helps (or hurts) so small a job
            contenders[OURS_ONE_THREAD] = contenders[OURS_RENDER]
            one_thread[OURS_ONE_THREAD] = {
                "setup": lambda: torch.set_num_threads(1),
                "teardown": lambda threads=threads: torch.set_num_threads(threads),
            }
        slow = {MATPLOTLIB: settings.matplotlib_repeats}
        sizes: dict[str, int] = {}

        def keep_size(
            name: str, fn: Callable[[], object], sizes: dict[str, int] = sizes
        ) -> Callable[[], object]:
            def call() -> object:
                result = fn()
                if isinstance(result, bytes):
                    sizes[name] = len(result)
                return result

            return call

        methods = [
            Method(
                name,
                keep_size(name, fn),
                repeats=repeats or slow.get(name),
                warmup=min(warmup, 1) if name in slow else None,
                **one_thread.get(name, {}),
            )
            for name, fn in contenders.items()
        ]
        timings = run_interleaved(methods, repeats or settings.render_repeats, warmup, device_sync(device))
        rows.append(
            {
                "shape": list(shape),
                "methods": {name: timing.to_dict() for name, timing in timings.items()},
                "png_bytes": sizes,
            }
        )
    return rows


# ----------------------------------------------------------------------------------------------- panel


class _PanelDriver:
    """Drives :class:`explorer.Explorer` as the front end would: set a control's value, read the new PNG.

    With no event loop running, the panel redraws synchronously inside the assignment, so the time from the
    assignment to ``app.grid_png`` is the time to new image bytes.
    """

    DISPLAY_VIEW = ([0], 64)  # the default view: first stage, 64 channels a page
    PAGED_VIEW = ([1], 16)  # blocks.1 has 24 channels: two pages of 16

    def __init__(self, device: str, copies: int) -> None:
        gallery = [image.copy() for _ in range(copies) for image in explorer.sample_images().values()]
        self.open_ms, self.app = time_once(lambda: explorer.Explorer(device=device, images=gallery))
        self.next_image = 1
        self.changed: dict[str, list[bool]] = {}
        self.model_runs: dict[str, int] = {}

    def view(
        self, out_indices: list[int], page_size: int, model: str = "default", pretrained: bool = True
    ) -> None:
        """Put the panel in a state (untimed): checkpoint, stage, page size, first image page."""
        app = self.app
        if app.model_box.value != model:
            app.model_box.value = model
        if app.pretrained_box.value != pretrained:
            app.pretrained_box.value = pretrained
        if app.out_indices != out_indices:
            app.out_indices = out_indices
        if app.page_size_box.value != page_size:
            app.page_size_box.value = page_size
        app.grid_png  # noqa: B018 - settles any pending work

    def change(self, kind: str, set_value: Callable[[], None]) -> bytes:
        """The timed part: set a control, read the grid's PNG; remember whether the bytes changed."""
        before, runs = self.app.grid_png, self.app.forward_passes
        set_value()
        png = self.app.grid_png
        self.changed.setdefault(kind, []).append(png != before)
        self.model_runs[kind] = self.model_runs.get(kind, 0) + self.app.forward_passes - runs
        return png

    def flip(self, box: Any, first: object, second: object) -> Callable[[], None]:
        """A change that toggles a control between two values."""
        return lambda: setattr(box, "value", second if box.value == first else first)

    def new_image(self) -> None:
        """Show the next image of the gallery, never shown before (so never cached)."""
        self.app.image_box.value = self.next_image
        self.next_image += 1


def _profile_display_change(driver: _PanelDriver, changes: int = 5) -> list[dict]:
    """Where a colour-map change spends its time: cumulative time of the library's functions (cProfile)."""
    driver.view(*_PanelDriver.DISPLAY_VIEW)
    profile = cProfile.Profile()
    flip = driver.flip(driver.app.cmap_box, "viridis", "magma")
    profile.enable()
    for _ in range(changes):
        flip()
        driver.app.grid_png  # noqa: B018
    profile.disable()
    stats = pstats.Stats(profile).stats  # {(file, line, function): (calls, primitive calls, tt, ct, callers)}
    rows = [
        {"function": f"{path.rsplit('explorer/', 1)[-1]}:{function}", "ms_per_change": ct * 1000.0 / changes}
        for (path, _, function), (_, _, _, ct, _) in stats.items()
        if "/explorer/" in path
        and "/widgets/" not in path
        and not function.startswith(("_", "<"))
        and ct > 1e-4 * changes
    ]
    return sorted(rows, key=lambda row: -row["ms_per_change"])[:8]


def panel_suite(settings: Settings, device: str = "cpu") -> dict:
    """Suite 5: the panel on the default model, driven headlessly.

    Display-only changes (colour map, normalisation, channel page), a new (uncached) image and a new
    checkpoint (pretrained -> random weights; the default -> resnet18, random) are interleaved; each is timed
    from the control's new value to new grid PNG bytes.

    Returns:
        ``open_ms`` (constructing the panel to its first grid), ``events`` (name -> timing dict),
        ``changed`` (name -> every change gave new bytes), ``model_runs`` (forward passes per kind),
        ``profile`` (where a colour-map change spends its time), ``status``.
    """
    copies = max(1, -(-(settings.panel_images + 2) // len(explorer.images.SAMPLE_NAMES)))
    driver = _PanelDriver(device, copies)
    app = driver.app
    display, paged = _PanelDriver.DISPLAY_VIEW, _PanelDriver.PAGED_VIEW
    events = {
        "colour map (display only)": (display, driver.flip(app.cmap_box, "viridis", "magma")),
        "normalisation (display only)": (display, driver.flip(app.norm_box, "channel", "stage")),
        "channel page (display only)": (paged, driver.flip(app.page_slider, 1, 2)),
        "new image (uncached)": (display, driver.new_image),
        "checkpoint: pretrained -> random": (
            (*display, "default", True),
            lambda: setattr(app.pretrained_box, "value", False),
        ),
        "checkpoint: default -> resnet18 (random)": (
            (*display, "default", False),
            lambda: setattr(app.model_box, "value", "resnet18"),
        ),
    }
    counts = {
        "new image (uncached)": settings.panel_images,
        "checkpoint: pretrained -> random": settings.panel_checkpoints,
        "checkpoint: default -> resnet18 (random)": settings.panel_checkpoints,
    }
    methods = [
        Method(
            kind,
            lambda kind=kind, set_value=set_value: driver.change(kind, set_value),
            repeats=counts.get(kind),
            warmup=0 if kind in counts else None,
            setup=lambda view=view: driver.view(*view),
        )
        for kind, (view, set_value) in events.items()
    ]
    timings: dict[str, Timing] = run_interleaved(methods, settings.panel_repeats, 1, device_sync(device))
    driver.view(*display)
    return {
        "open_ms": driver.open_ms,
        "default_stage": app.stage,
        "events": {name: timing.to_dict() for name, timing in timings.items()},
        "changed": {kind: all(flags) for kind, flags in driver.changed.items()},
        "model_runs": driver.model_runs,
        "profile": _profile_display_change(driver),
        "status": app.status,
    }


# ----------------------------------------------------------------------------------------------- memory


def memory_suite(
    device: str = "cpu", models: Sequence[str] = MODELS, batch: int = 8, threads: int = 2
) -> list[dict]:
    """Suite 6: peak memory of every-stage capture against the bare forward, each in a fresh process.

    Returns:
        One row per model: ``bare`` and ``explorer`` results of :func:`benchmarks.memory.measure_peak`
        (or ``error``).
    """
    rows = []
    for model_name in models:
        _log.info("memory: %s, batch %d", model_name, batch)
        row = {"model": model_name, "batch": batch}
        for method in MEMORY_METHODS:
            row[method] = measure_in_subprocess(model_name, method, batch, device=device, threads=threads)
        rows.append(row)
    return rows
