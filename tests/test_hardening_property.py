"""Hardening (issue 12), generated: malformed checkpoints, configs, processor configs, arrays and arguments.

The only outcomes allowed are a correct result or an ``ExplorerError``. Loading cases (where a hang or a memory
blow-up is possible) run in batches in a worker process (``tests/hardening_worker.py``) under a timeout per
case and a bound on the tensor bytes its checkpoint reads return (a spy on torch.load and safetensors); the others run here. Where the generated input
decides the answer (a non-float tensor where a weight goes, a zero standard deviation, a self-containing
dict), the answer itself is checked, not only its type. Run with ``-s`` to see the outcome counts.
"""

from __future__ import annotations

import collections
import io
import json
import math
import pathlib
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import pytest
import timm
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import explorer
from explorer.backbones._checkpoint import size_limit
from explorer.errors import ExplorerError, InvalidArgumentError, StageSelectionError
from explorer.images import MAX_INPUT_SIDE, load_image
from explorer.render import render_grid
from explorer.stages import select_stages

WORKER = pathlib.Path(__file__).with_name("hardening_worker.py")
ARCH = "test_resnet"  # timm's own tiny test network: 0.5 M parameters
# the most tensor bytes a case may read: what explorer allows for this model's checkpoint
MAX_READ_BYTES = size_limit(timm.create_model(ARCH))
# batches run in a worker process: no shrinking (each try would start one), the failing case is named instead
BATCHES = settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],
)
OUTCOMES: collections.Counter = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def _report_outcomes():
    yield
    print("\ngenerated cases by outcome:", dict(sorted(OUTCOMES.items())))


def _run_worker(cases: list[dict], folder: pathlib.Path) -> list[dict]:
    """Each case's result, from one worker process; fails naming the case that hung or crashed it."""
    (folder / "cases.json").write_text(json.dumps(cases))
    budget = 30 + 30 * len(cases)  # the worker's own per-case timeout (60 s) fires first on a hang
    done = subprocess.run(
        [sys.executable, str(WORKER), str(folder / "cases.json")],
        capture_output=True,
        text=True,
        timeout=budget,
    )
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if len(results) < len(cases):
        stuck = cases[len(results)]
        pytest.fail(f"worker died (status {done.returncode}) on case {stuck}:\n{done.stderr[-3000:]}")
    return results


def _check(results: list[dict], cases: list[dict], group: str) -> None:
    for case, result in zip(cases, results):
        outcome = result["outcome"]
        what = f"{case['case']} gave {outcome}: {result.get('message', result.get('note'))}"
        OUTCOMES[f"{group}: {outcome}"] += 1
        assert not outcome.startswith("bug:"), what
        assert result["read_bytes"] <= MAX_READ_BYTES, what
        expected = case.get("expect")
        if expected == "error":
            assert outcome != "ok", what
        elif expected is not None:
            assert outcome == expected.split(":")[0], what
            if ":" in expected:
                assert expected.split(":", 1)[1] in result["note"], what
        if outcome == "ok":
            assert max(result["input_size"]) <= MAX_INPUT_SIDE, what
            assert result["finite"] or "NaN" in result["note"], what
        else:
            assert len(result["message"]) < 3000, what


# -- checkpoints ---------------------------------------------------------------------------------------------------

REFERENCE = timm.create_model(ARCH).state_dict()
FLOAT_KEYS = [key for key, tensor in REFERENCE.items() if tensor.is_floating_point()]
FLOAT_TYPES = [torch.float16, torch.bfloat16, torch.float64, torch.float8_e4m3fn]
OTHER_TYPES = [torch.int8, torch.uint8, torch.int64, torch.bool, torch.complex64]

checkpoint_cases = st.fixed_dictionaries(
    {
        "mutation": st.sampled_from(
            ["none", "dtype", "nan", "meta", "sparse", "drop", "extra", "reshape", "junk", "bomb"]
        ),
        "dtype": st.sampled_from(FLOAT_TYPES + OTHER_TYPES),
        "key": st.integers(0, len(FLOAT_KEYS) - 1),
        "container": st.sampled_from(["plain", "state_dict", "model", "ema", "module_prefix", "cycle"]),
        "format": st.sampled_from(["safetensors", "zip", "legacy", "deflated"]),
        "suffix": st.sampled_from(["", "upper", "wrong"]),
        "placement": st.sampled_from(["file", "folder"]),
    }
)


def _state(case: dict):
    """The object to save and the expected outcome."""
    state = {key: tensor.clone() for key, tensor in REFERENCE.items()}
    key = FLOAT_KEYS[case["key"]]
    mutation, expect = case["mutation"], "ok"
    if mutation == "dtype":
        state[key] = state[key].to(case["dtype"])
        floating = case["dtype"].is_floating_point
        expect = "ok:cast from" if floating else "CheckpointError"
    elif mutation == "nan":
        state[key] = (
            state[key].clone().view(-1).index_fill_(0, torch.tensor([0]), math.nan).view_as(state[key])
        )
        expect = "ok:NaN or inf"
    elif mutation == "meta":
        state[key] = torch.empty_like(state[key], device="meta")
        expect = "CheckpointError"
    elif mutation == "sparse":
        state[key] = state[key].to_sparse()
        expect = "CheckpointError"
    elif mutation == "drop":
        del state[key]
        expect = "CheckpointError"
    elif mutation == "extra":
        state["surplus.weight"] = torch.zeros(3)
        expect = "CheckpointError"
    elif mutation == "reshape":
        state[key] = state[key].reshape(-1)[:-1] if state[key].numel() > 1 else torch.zeros(2)
        expect = "CheckpointError"
    elif mutation == "junk":
        return {"epoch": 3, "note": "no tensors here", "values": [1, 2, 3]}, "CheckpointError"
    container = case["container"]
    if container == "module_prefix":
        state = {f"module.{k}": v for k, v in state.items()}
    elif container == "cycle":
        loop: dict = {"epoch": 1}
        loop["state_dict"] = loop
        return loop, "CheckpointError"
    elif container != "plain":
        state = {container: state, "epoch": 7}
    return state, expect


def _write_checkpoint(case: dict, folder: pathlib.Path) -> dict:
    state, expect = _state(case)
    fmt = case["format"]
    representable = all(
        isinstance(v, torch.Tensor) and v.layout == torch.strided and not v.is_meta and not v.is_complex()
        for v in state.values()
    )
    if fmt == "safetensors" and not representable:
        fmt = "zip"
    suffix = ".safetensors" if fmt == "safetensors" else ".pth"
    if case["suffix"] == "upper":
        suffix = suffix.upper()
    elif case["suffix"] == "wrong":
        suffix = ".pth" if fmt == "safetensors" else ".safetensors"
    target = folder / ("weights" + suffix)
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(target))
    else:
        buffer = io.BytesIO()
        torch.save(state, buffer, _use_new_zipfile_serialization=fmt != "legacy")
        target.write_bytes(buffer.getvalue())
        bomb = case["mutation"] == "bomb" and fmt != "legacy"
        if fmt == "deflated" or bomb:
            _deflate(target, bomb=bomb)
            expect = "CheckpointError" if bomb else expect
    if case["placement"] == "folder":
        (folder / "config.json").write_text(json.dumps({"architecture": ARCH, "num_classes": 1000}))
        return {"spec": str(folder), "expect": expect, "case": repr(case)}
    return {"spec": str(target), "kwargs": {"arch": ARCH}, "expect": expect, "case": repr(case)}


def _deflate(path: pathlib.Path, bomb: bool) -> None:
    """Re-write a zip checkpoint with deflated members; a bomb adds 256 MiB of zeros (256 KiB on disk)."""
    data = path.read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        names = source.namelist()
        for name in names:
            out.writestr(name, source.read(name))
        if bomb:
            prefix = names[0].split("/")[0]
            with out.open(f"{prefix}/data/zeros", "w") as member:
                block = bytes(1 << 20)
                for _ in range(256):
                    member.write(block)


@BATCHES
@given(batch=st.lists(checkpoint_cases, min_size=25, max_size=35))
def test_property_malformed_checkpoints(batch):
    with tempfile.TemporaryDirectory() as root:
        cases = []
        for index, case in enumerate(batch):
            folder = pathlib.Path(root) / f"case{index}"
            folder.mkdir()
            cases.append(_write_checkpoint(case, folder))
        _check(_run_worker(cases, pathlib.Path(root)), cases, "checkpoint")


# -- configs: timm folders, transformers folders, processor configs ---------------------------------------------

ABSENT = object()

timm_configs = st.fixed_dictionaries(
    {
        "architecture": st.sampled_from([ARCH, ARCH, 5, None, [ARCH], "no_such_model", ""]),
        "model_args": st.sampled_from(
            [ABSENT, {}, {"drop_rate": 0.1}, {"nonsense_kwarg": 1}, [1, 2], "x", {"num_classes": -5}]
        ),
        "pretrained_cfg": st.sampled_from(
            [
                ABSENT,
                {},
                {"mean": [0.5]},
                {"mean": [0.1, 0.2, 0.3]},
                {"std": [0, 0, 0]},
                {"input_size": [3, 0, 0]},
                {"input_size": [3, 8000, 8000]},
                {"input_size": "big"},
                {"input_size": [3, 64, 64]},
                {"crop_pct": 0},
                {"crop_pct": "x"},
                [1],
            ]
        ),
        "num_classes": st.sampled_from([ABSENT, 10, "ten", -1]),
        "cut": st.sampled_from([None, None, None, 1, 10]),
    }
)

hf_configs = st.fixed_dictionaries(
    {
        "model_type": st.sampled_from([ABSENT, ABSENT, "nonsense", 5, None, "vit"]),
        "architectures": st.sampled_from(
            [
                ABSENT,
                ["pipeline"],
                ["AutoConfig"],
                ["ResNetBackbone"],
                ["NoSuchClass"],
                "ResNetBackbone",
                [5],
                [],
            ]
        ),
        "field": st.sampled_from(
            [
                ABSENT,
                ("hidden_sizes", "x"),
                ("hidden_sizes", [8]),
                ("hidden_sizes", [-1, 16]),
                ("depths", "xx"),
                ("depths", [0, 1]),
                ("num_channels", 0),
                ("out_features", ["bogus"]),
                ("out_features", 5),
            ]
        ),
        "processor": st.sampled_from(
            [
                ABSENT,
                "not json",
                "[]",
                {"size": 0},
                {"size": -1},
                {"size": 8000},
                {"size": 64},
                {"size": "big"},
                {"size": {"height": 0, "width": 64}},
                {"size": {"shortest_edge": 8000}},
                {"size": {"shortest_edge": 64}},
                {"size": 1.5},
                {"size": 64, "do_center_crop": True, "crop_size": 0},
                {"size": 64, "do_center_crop": True, "crop_size": {"height": 0, "width": 0}},
                {"size": 64, "do_center_crop": True, "crop_size": 48},
                {"image_mean": [0.5]},
                {"image_mean": []},
                {"image_mean": 0.5},
                {"image_mean": ["a", "b", "c"]},
                {"image_mean": [math.nan] * 3},
                {"image_std": [0, 0, 0]},
                {"image_std": [1e-3] * 3},
                {"resample": 99},
            ]
        ),
        "pretrained": st.booleans(),
        "cut": st.sampled_from([None, None, None, 1, 25]),
    }
)

# processor configs whose answer is known: refused
BAD_PROCESSORS = [
    "not json",
    "[]",
    {"size": 0},
    {"size": -1},
    {"size": 8000},
    {"size": "big"},
    {"size": {"height": 0, "width": 64}},
    {"size": {"shortest_edge": 8000}},
    {"size": 1.5},
    {"size": 64, "do_center_crop": True, "crop_size": 0},
    {"size": 64, "do_center_crop": True, "crop_size": {"height": 0, "width": 0}},
    {"image_mean": [0.5]},
    {"image_mean": []},
    {"image_mean": ["a", "b", "c"]},
    {"image_mean": [math.nan] * 3},
    {"image_std": [0, 0, 0]},
]


def _text(value: dict, cut: int | None) -> str:
    text = json.dumps({k: v for k, v in value.items() if v is not ABSENT})
    return text[:cut] if cut else text


@BATCHES
@given(
    timm_batch=st.lists(timm_configs, min_size=10, max_size=15),
    hf_batch=st.lists(hf_configs, min_size=12, max_size=18),
)
def test_property_malformed_configs(tiny_hf_folder, timm_batch, hf_batch):
    with tempfile.TemporaryDirectory() as root:
        cases = []
        for index, config in enumerate(timm_batch):
            folder = pathlib.Path(root) / f"timm{index}"
            folder.mkdir()
            (folder / "config.json").write_text(
                _text({k: config[k] for k in config if k != "cut"}, config["cut"])
            )
            cases.append({"spec": str(folder), "kwargs": {"pretrained": False}, "case": repr(config)})
        base = json.loads((tiny_hf_folder / "config.json").read_text())
        for index, config in enumerate(hf_batch):
            folder = pathlib.Path(root) / f"hf{index}"
            folder.mkdir()
            (folder / "model.safetensors").write_bytes((tiny_hf_folder / "model.safetensors").read_bytes())
            edited = dict(base)
            for key in ("model_type", "architectures"):
                if config[key] is not ABSENT:
                    edited[key] = config[key]
            if config["field"] is not ABSENT:
                edited[config["field"][0]] = config["field"][1]
            (folder / "config.json").write_text(_text(edited, config["cut"]))
            processor = config["processor"]
            if processor is not ABSENT:
                text = processor if isinstance(processor, str) else json.dumps(processor)
                (folder / "preprocessor_config.json").write_text(text)
            case = {
                "spec": f"hf:{folder}",
                "kwargs": {"pretrained": config["pretrained"]},
                "case": repr(config),
            }
            if processor in BAD_PROCESSORS:
                case["expect"] = "error"  # whatever else the folder holds
            cases.append(case)
        _check(_run_worker(cases, pathlib.Path(root)), cases, "config")


# -- arrays ----------------------------------------------------------------------------------------------------------

DTYPES = ["uint8", "uint16", "int16", "int32", "int64", "bool", "float16", "float32", "float64", "complex64"]


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    layout = draw(st.sampled_from(["hw", "hwc1", "hwc3", "hwc4", "chw3"]))
    height, width = draw(st.integers(1, 12)), draw(st.integers(5, 12))
    shape = {
        "hw": (height, width),
        "hwc1": (height, width, 1),
        "hwc3": (height, width, 3),
        "hwc4": (height, width, 4),
        "chw3": (3, height, width),
    }[layout]
    scale = draw(st.sampled_from([1.0, 255.0, 4095.0, -1.0]))
    values = np.random.default_rng(draw(st.integers(0, 2**16))).random(shape) * scale
    if draw(st.booleans()) and dtype.kind == "f":
        values.flat[0] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    if dtype.kind in "iub":
        values = np.nan_to_num(values).round()
        if dtype.kind == "u":
            values = np.abs(values)
    array = values.astype(dtype)
    value_range = draw(st.sampled_from([None, None, (0, 255), (0, 4095), (-1, 1), (5, 5), (0, math.inf)]))
    as_tensor = draw(st.booleans()) and dtype.name not in ("uint16",)
    return array, value_range, as_tensor


def _expected_pixel(array: np.ndarray, value_range) -> int | None:
    """The rule, written out for one pixel: its grey level, or None when the array must be refused."""
    if array.dtype.kind == "c":
        return None
    values = array.astype(np.float64)
    if array.dtype.kind == "f" or value_range is not None:
        if not np.isfinite(values).all():
            return None
    if value_range is not None:
        low, high = value_range
        if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            return None
        return int(np.clip((values.flat[0] - low) * 255.0 / (high - low) + 0.5, 0, 255))
    if array.dtype == np.bool_:
        return 255 * int(array.flat[0])
    if array.dtype == np.uint8:
        return int(array.flat[0])
    if array.dtype == np.uint16:
        return int(values.flat[0] / 257.0 + 0.5)
    if array.dtype.kind in "iu":
        return None
    if values.min() < 0 or values.max() > 1:
        return None
    return int(values.flat[0] * 255.0 + 0.5)


@settings(max_examples=300, deadline=None)
@given(case=arrays())
def test_property_arrays_follow_the_rule(case):
    array, value_range, as_tensor = case
    source = torch.from_numpy(array) if as_tensor else array
    expected = _expected_pixel(array, value_range)
    try:
        image = load_image(source, value_range=value_range)
    except ExplorerError as err:  # ImageError, or InvalidArgumentError for a value_range that is no range
        OUTCOMES[f"array: {type(err).__name__}"] += 1
        assert expected is None, (array.dtype, array.shape, value_range, err)
        return
    OUTCOMES["array: ok"] += 1
    assert expected is not None, (array.dtype, array.shape, value_range)
    assert image.mode == "RGB"
    if array.shape[-1] != 4:  # RGBA is composited over white; every other layout keeps its first value
        assert image.getpixel((0, 0))[0] == expected, (array.dtype, array.shape, value_range)


# -- arguments ----------------------------------------------------------------------------------------------------

BAD_SIZES = st.sampled_from([True, 2.5, "8", math.nan, None, -1, 0])  # 2.0 is whole: accepted
GOOD_RENDER = {
    "pad": st.integers(0, 20),
    "cols": st.one_of(st.none(), st.integers(1, 10**9)),
    "scale": st.one_of(st.none(), st.integers(1, 10**9)),
    "max_size": st.integers(64, 1024),
    "channels": st.sampled_from(["all", "first:8", "top:4", "bottom:3", "page:1/4", [0, 1], range(3), 5]),
    "clip": st.sampled_from([None, 99.5, 50.5, 100]),
    "norm_range": st.sampled_from(
        [("channel", None), ("stage", None), ("global", (0, 1)), ("symmetric", None), ("symmetric", (-2, 2))]
    ),
}
BAD_RENDER = {
    "pad": st.one_of(st.integers(-3, -1), BAD_SIZES.filter(lambda v: v != 0)),
    "cols": st.one_of(st.integers(-3, 0), BAD_SIZES.filter(lambda v: v is not None)),
    "scale": st.one_of(st.integers(-3, 0), BAD_SIZES.filter(lambda v: v is not None)),
    "max_size": st.one_of(st.integers(-3, 0), BAD_SIZES.filter(lambda v: v is not None)),
    "channels": st.sampled_from([True, 2.0, None, [1.5], "page:9/4", [99], "top:x", []]),
    "clip": st.sampled_from(["99", 50, 101, math.nan, True]),
    "norm_range": st.sampled_from(
        [
            ("global", (-math.inf, math.inf)),
            ("global", (1, 0)),
            ("symmetric", (math.nan, 1)),
            ("global", "x"),
            ("bogus", None),
            ("channel", (0, 1)),
            ("global", None),
        ]
    ),
}


@st.composite
def render_arguments(draw) -> tuple[dict, str | None]:
    """Valid arguments, with at most one of them replaced by a bad value (named; None when all are valid)."""
    bad = draw(st.sampled_from([None, None, None, *GOOD_RENDER]))
    return {name: draw(BAD_RENDER[name] if name == bad else good) for name, good in GOOD_RENDER.items()}, bad


@settings(max_examples=300, deadline=None)
@given(case=render_arguments())
def test_property_render_arguments(case):
    arguments, bad = case
    fmap = torch.randn(16, 7, 9)
    norm, vrange = arguments.pop("norm_range")
    channels = arguments.pop("channels")
    try:
        grid = render_grid(fmap, channels, norm=norm, vrange=vrange, **arguments)
    except InvalidArgumentError as err:
        OUTCOMES["render: InvalidArgumentError"] += 1
        assert len(str(err)) < 1000
        # only a bad value, or a pad that leaves no room for the tiles in max_size, is refused
        too_wide = "even at one pixel a tile" in str(err) or "at most max_size" in str(err)
        assert bad is not None or too_wide, (arguments, err)
        return
    OUTCOMES["render: ok"] += 1
    assert bad is None, (bad, arguments)
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    assert max(grid.shape[:2]) <= arguments["max_size"]


INDEX_ITEMS = st.one_of(st.integers(-5, 4), st.integers(-8, 8), st.sampled_from([1.0, None, "1", -6, 10**9]))


@settings(max_examples=300, deadline=None)
@given(
    out_indices=st.one_of(
        st.none(),
        st.sets(st.integers(0, 4), max_size=3).map(sorted),
        st.lists(st.integers(-5, 4), max_size=3),
        st.lists(INDEX_ITEMS, max_size=5),
        st.just(list(range(10**5))),
    ),
    out_features=st.one_of(
        st.none(),
        st.none(),
        st.lists(st.sampled_from(["stem", "s1", "s2", "s3", "s4", "x", 1, None]), max_size=3),
    ),
)
def test_property_stage_arguments(out_indices, out_features):
    names = ["stem", "s1", "s2", "s3", "s4"]
    try:
        features, indices = select_stages(names, out_features=out_features, out_indices=out_indices)
    except StageSelectionError as err:
        OUTCOMES["stages: StageSelectionError"] += 1
        assert isinstance(err, ValueError) and len(str(err)) < 1000
        return
    OUTCOMES["stages: ok"] += 1
    assert features == [names[i] for i in indices]
    assert all(isinstance(i, int) for i in indices)  # no float, None or numpy index got through


def test_the_outcomes_are_explorer_errors():
    """The classes the generated cases may end in are all ExplorerErrors (a guard on the counts above)."""
    for name in ("CheckpointError", "UnknownBackboneError", "InvalidArgumentError", "StageSelectionError"):
        assert issubclass(getattr(explorer, name), ExplorerError)
