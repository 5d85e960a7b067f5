"""Hostile-argument cases generated from the live public API, and the child process that runs them.

Used by ``tests/test_api_fuzz.py``. Cases are generated from what the package exports *now*: every callable in
``explorer.__all__`` (exception classes, result records and the panel aside, see :data:`SKIPPED`), the public
methods of the objects the library hands out (a Backbone, FeatureMaps, ChannelStats, a Scan), and every
argument of every subcommand of the ``explorer`` command. A function added later is covered without editing
this file. Each argument in turn gets each hostile value of :data:`FAMILIES` while the others get working
values (:func:`baseline`).

Run as ``python tests/api_fuzz.py cases.json``: one JSON line per case on stdout, ``{"case": i, "outcome":
"ok" | "explorer:<class>" | "bug:<class>", "message": ...}`` (the CLI: ``"exit:<code>"`` and the number of stderr
lines). ``faulthandler`` ends the process when one case runs past ``CASE_TIMEOUT_S``; the parent records that
case as a hang and starts a new child from the next one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import inspect
import io
import json
import math
import os
import sys
import tempfile
import warnings
from pathlib import Path

CASE_TIMEOUT_S = 30.0

FAMILIES: dict[str, list[str]] = {
    "wrong type": ["object"],
    "empty": ["empty list"],
    "huge": ["huge int"],
    "negative": ["minus one"],
    "nan": ["nan"],
    "nul": ["nul str"],
    "nested": ["nested list"],
}
"""The hostile value kinds, by family."""

CLI_FAMILIES: dict[str, list[str]] = {
    "wrong type": ["a word", "superscript", "superscript in a list"],
    "empty": [""],
    "huge": ["9" * 40],
    "negative": ["-1"],
    "nan": ["nan"],
    "nul": ["a\x00b"],
    "nested": ["[" * 2000 + "]" * 2000],
}
"""Hostile argument strings for the command line, by family (a word and a folder fill the wrong-type role)."""

SKIPPED = {
    "Explorer": "the panel reports in its status line (tests/test_panel*.py); one costs 16 s to build here",
    "ExplorerState": "the panel's state; the panel tests cover it",
    "Backbone": "built by load_backbone(); its methods are generated instead",
    "Scan": "built by scan() and Scan.load(); its methods are generated instead",
    "Concepts": "built by concepts() and Concepts.load(); its methods are generated instead",
}
"""Public names that are not called directly, and why."""

CLI_SKIPPED = {"lab": "starts JupyterLab in place of the process"}

OWNERS = {
    "Backbone": "bb",
    "FeatureMaps": "maps",
    "ChannelStats": "stats",
    "ChannelDifference": "diff",
    "Histogram": "histogram",
    "Scan": "scan",
    "Concepts": "con",
    "GridLayout": "layout",
    "Preprocess": ("pre", "hfpre"),
    "Stage": "stage",
}
"""Public classes whose methods are called, and the name of the working instance (:meth:`Baseline.owner`; a
tuple: one instance per source, the Preprocess of timm's transform and of a transformers processor).
Every public class with public methods is here, in :data:`SKIPPED` or in :data:`NOT_YET_CALLED` (the test
checks)."""

NOT_YET_CALLED: dict[str, str] = {}
"""Public classes with methods that are not called yet, and why (each a known gap, listed in the report)."""


def _nested(depth: int = 100_000) -> list:
    nested: list = []
    for _ in range(depth):
        nested = [nested]
    return nested


_VALUES = {
    "object": object,
    "bytes": lambda: b"\xff\xfe",
    "empty str": str,
    "empty list": list,
    "none": lambda: None,
    "huge int": lambda: 10**18,
    "huge list": lambda: list(range(1_000_000)),
    "minus one": lambda: -1,
    "nan": lambda: math.nan,
    "inf": lambda: math.inf,
    "nul str": lambda: "a\x00b",
    "nested list": _nested,
}


def value(kind: str):
    """A fresh hostile value of ``kind`` (built in the child: some cannot travel as JSON)."""
    return _VALUES[kind]()


# -- what to call -------------------------------------------------------------------------------------------------


def _signature(obj):
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return None


def _is_record(obj) -> bool:
    """A dataclass that only holds results (its generated ``__init__`` checks nothing)."""
    return dataclasses.is_dataclass(obj) and not hasattr(obj, "__post_init__")


def targets() -> list[tuple[str, list[tuple[str, bool]]]]:
    """``(qualified name, [(parameter, required), ...])`` for everything the fuzz calls."""
    import explorer

    found = []
    for name in explorer.__all__:
        obj = getattr(explorer, name)
        if name in SKIPPED or (isinstance(obj, type) and (issubclass(obj, BaseException) or _is_record(obj))):
            continue
        if callable(obj) and (signature := _signature(obj)) is not None:
            found.append((name, _parameters(signature)))
    for class_name, owners in OWNERS.items():
        for attr, member in methods(getattr(explorer, class_name)):
            signature = _signature(member)
            if signature is None:
                continue
            parameters = [p for p in _parameters(signature) if p[0] not in ("self", "cls")]
            for owner in (owners,) if isinstance(owners, str) else owners:
                found.append((f"{owner}.{attr}", parameters))
    return found


def methods(cls: type) -> list[tuple[str, object]]:
    """The public methods of a public class (``__call__`` included; a dict's own methods left out)."""
    return [
        (attr, member)
        for attr, member in inspect.getmembers(cls)
        if (not attr.startswith("_") or attr == "__call__")
        and callable(member)
        and not isinstance(member, type)
        and not (issubclass(cls, dict) and hasattr(dict, attr))
    ]


def _parameters(signature: inspect.Signature) -> list[tuple[str, bool]]:
    return [
        (p.name, p.default is inspect.Parameter.empty)
        for p in signature.parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def generate() -> list[dict]:
    """Every (callable, argument, hostile kind) case, then every (subcommand, argument, hostile string)."""
    cases = []
    for name, parameters in targets():
        for parameter, _ in parameters:
            for family, kinds in FAMILIES.items():
                for kind in kinds:
                    cases.append({"call": name, "param": parameter, "family": family, "kind": kind})
    for command, arguments in cli_arguments().items():
        for argument in arguments:
            for family, words in CLI_FAMILIES.items():
                for word in words:
                    cases.append({"cli": command, "arg": argument, "family": family, "word": word})
    return cases


def cli_arguments(skipped: dict = CLI_SKIPPED) -> dict[str, list[str]]:
    """Each subcommand of the ``explorer`` parser (but ``skipped``) and its arguments that take a value
    (positional names and option strings), read from the parser itself."""
    import argparse

    from explorer.cli import _parser

    found = {}
    for action in _parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                if command in skipped:
                    continue
                found[command] = [
                    a.option_strings[-1] if a.option_strings else a.dest
                    for a in sub._actions
                    if a.nargs != 0 and not isinstance(a, argparse._HelpAction)
                ]
    return found


# -- working values -----------------------------------------------------------------------------------------------


class Baseline:
    """Working values for every argument not under test, built once per child: a tiny random timm network at
    32x32, two images on disk, their maps, statistics and scan."""

    def __init__(self, root: Path) -> None:
        import numpy as np
        import torch
        from PIL import Image

        import explorer
        from explorer.backbones.timm import TimmPreprocess

        torch.manual_seed(0)
        self.root = root
        bb = explorer.load_backbone(
            "test_resnet", out_features=["layer1", "layer2"], pretrained=False, device="cpu"
        )
        bb.preprocess = TimmPreprocess({"input_size": (3, 32, 32), "crop_pct": 1.0})
        self.bb = bb
        images = root / "images"
        images.mkdir()
        rng = np.random.default_rng(0)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(images / f"im{i}.png")
        self.folder = images
        self.image_path = images / "im0.png"
        self.image = Image.open(self.image_path).convert("RGB")
        self.maps = bb.extract([self.image])
        self.fmap = self.maps["layer1"][0]
        self.stats = explorer.channel_stats(self.maps["layer1"])
        self.scan = explorer.scan(bb, images, k=2, num_workers=0, cache=None, progress=False)
        self.saved_scan = self.scan.save(root / "saved-scan")
        self.maps_file = explorer.save_feature_maps(self.maps, root / "maps.safetensors")
        self.diff = explorer.channel_difference(self.fmap, self.fmap.flip(-1))
        self.histogram = explorer.histogram(self.fmap)
        _, self.layout = explorer.render_grid(self.fmap, return_layout=True)
        self.pca = explorer.pca(bb, [self.image, self.image_path], stage="layer1")
        self.similarity = explorer.similarity(
            bb, [self.image, self.image_path], stage="layer1", query=(0, 1, 1)
        )
        vit = explorer.load_backbone("test_vit", pretrained=False, device="cpu")
        vit.preprocess = TimmPreprocess({"input_size": (3, 32, 32), "crop_pct": 1.0})
        self.vit = vit
        self.attention = explorer.attention(vit, self.image, rollout=True)
        self.concepts = explorer.concepts(
            bb, images, stage="layer1", n_concepts=2, k=2, cache=None, num_workers=0, progress=False
        )
        self.saved_concepts = self.concepts.save(root / "saved-concepts")
        self.hf_preprocess = _detr_preprocess()
        self.counter = 0

    def out(self, suffix: str) -> Path:
        self.counter += 1
        return self.root / f"out{self.counter}{suffix}"

    def argument(self, call: str, parameter: str):
        """A working value for ``parameter`` of ``call``; None where nothing better is known."""
        specific = {
            ("load_backbone", "spec"): "test_resnet",
            ("scan", "backbone"): self.bb,
            ("scan", "source"): self.folder,
            ("load_image", "source"): self.image_path,
            ("load_feature_maps", "path"): self.maps_file,
            ("save_feature_maps", "path"): self.out(".safetensors"),
            ("save_image", "path"): self.out(".png"),
            ("save_png", "path"): self.out(".png"),
            ("stats_to_csv", "path"): self.out(".csv"),
            ("stats_to_json", "path"): self.out(".json"),
            ("scan.save", "folder"): self.out(""),
            ("scan.save_html", "folder"): self.out(""),
            ("scan.load", "path"): self.saved_scan,
            ("sample_images", "names"): ["chelsea"],
            ("sample_dataset", "n"): 2,
            ("sample_dataset", "folder"): self.out(""),
            ("select_channels", "num_channels"): 8,
            ("select_stages", "stage_names"): ["a", "b"],
            ("model_view", "config"): self.bb.preprocess,
            ("bb.capture", "layers"): ["layer1.0.conv1"],
            ("bb.stage_maps", "names"): ["layer1"],
            ("bb.stage", "name"): "layer1",
            ("bb.layout", "name"): "layer1",
            ("overlay", "channel_map"): self.fmap[0],
            ("heatmap_figure", "channel_map"): self.fmap[0],
            ("attention", "backbone"): self.vit,
            ("con.encode", "maps"): self.maps,
            ("con.load", "path"): self.saved_concepts,
            ("con.save", "folder"): self.out(""),
            ("con.save_html", "folder"): self.out(""),
            ("channel_difference", "b"): self.fmap.flip(-1),
            ("patch_pca_figure", "result"): self.pca,
            ("similarity_figure", "result"): self.similarity,
            ("attention_figure", "result"): self.attention,
        }
        if (call, parameter) in specific:
            return specific[call, parameter]
        general = {
            "backbone": self.bb,
            "bb": self.bb,
            "model": self.bb.model,
            "image": self.image,
            "images": [self.image],
            "pixels": torch_pixels(),
            "pixel_values": self.bb.pixel_values([self.image]),
            "maps": self.maps,
            "fmap": self.maps["layer1"],
            "a": self.fmap,
            "b": self.fmap,
            "data": self.fmap,
            "array": np_grid(),
            "stats": self.stats,
            "stage": "layer1",
            "channel": 0,
            "channels": "first:4",
            "cmap": "viridis",
            "spec": "test_resnet",
            "layers": ["layer1"],
            "source": self.folder,
            "concept": 0,
        }
        return general.get(parameter)

    def owner(self, name: str):
        return {
            "bb": self.bb,
            "maps": self.maps,
            "stats": self.stats,
            "diff": self.diff,
            "histogram": self.histogram,
            "layout": self.layout,
            "stage": self.bb.stages[0],
            "scan": self.scan,
            "con": self.concepts,
            "pre": self.bb.preprocess,
            "hfpre": self.hf_preprocess,
        }[name]


def _detr_preprocess():
    """A transformers processor that keeps the aspect ratio (DETR's), small: the other source's Preprocess."""
    import transformers

    from explorer.backbones.hf import HFPreprocess

    return HFPreprocess(transformers.DetrImageProcessor(size={"shortest_edge": 32, "longest_edge": 64}))


def torch_pixels():
    import torch

    return torch.rand(1, 3, 32, 32)


def np_grid():
    import numpy as np

    return np.zeros((8, 8, 3), np.uint8)


# -- running ------------------------------------------------------------------------------------------------------


def resolve(call: str, baseline: Baseline):
    import explorer

    if "." in call:
        owner, attr = call.split(".", 1)
        return getattr(baseline.owner(owner), attr)
    return getattr(explorer, call)


def quiet_settings(call: str) -> dict:
    """Settings that keep a working call offline, on the CPU, in memory, in this process, and small."""
    quiet = {"pretrained": False, "device": "cpu", "cache": None, "progress": False, "num_workers": 0}
    small = {
        "concepts": {"stage": "layer1", "n_concepts": 2, "k": 2},
        "visualize": {"steps": 1, "size": 16},
        "magnitude_spectrum": {"size": 16},
        "pca": {"stage": "layer1"},
        "similarity": {"stage": "layer1"},
    }
    if call in ("load_backbone", "scan", "concepts"):
        return quiet | small.get(call, {})
    return small.get(call, {})


def run_call(case: dict, baseline: Baseline, parameters: dict[str, list[tuple[str, bool]]]) -> dict:
    import explorer

    function = resolve(case["call"], baseline)
    kwargs = {}
    for name, required in parameters[case["call"]]:
        if name == case["param"]:
            kwargs[name] = value(case["kind"])
        elif required:
            kwargs[name] = baseline.argument(case["call"], name)
    for name, setting in quiet_settings(case["call"]).items():
        if name != case["param"] and name in dict(parameters[case["call"]]):
            kwargs[name] = setting
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            function(**kwargs)
    except explorer.ExplorerError as err:
        return {"outcome": f"explorer:{type(err).__name__}", "message": str(err)[:300]}
    except Exception as err:  # noqa: BLE001 - anything else escaping is what the test looks for
        return {"outcome": f"bug:{type(err).__name__}", "message": str(err)[:300]}
    return {"outcome": "ok"}


def cli_argv(command: str, baseline: Baseline, replace: str | None = None, word: str = "") -> list[str]:
    """A working command line for ``command`` with argument ``replace`` given ``word``."""
    from explorer.cli import _parser

    parser = _parser()
    sub = next(
        a.choices[command] for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict)
    )
    folders = ("scan", "concepts", "visualize")  # write a folder, not one image
    working = {
        "spec": "test_vit" if command == "attention" else "test_resnet",
        "image": str(baseline.image_path),
        "images": str(baseline.image_path),
        "source": str(baseline.folder),
        "--out": str(baseline.out("" if command in folders else ".png")),
        "--device": "cpu",
        "--workers": "0",
        "--csv": str(baseline.out(".csv")),
        "--query": "0,1,1",
        "--channel": "0",
        "--steps": "1",
        "--size": "16",
        "--n-concepts": "2",
    }
    if command == "concepts":
        working |= {"--k": "2", "--stage": "layer1"}
    argv = [command]
    for action in sub._actions:
        if action.nargs == 0:
            continue
        key = action.option_strings[-1] if action.option_strings else action.dest
        if key == replace:
            argv += [word] if not action.option_strings else [key, word]
        elif not action.option_strings:
            argv.append(working[key])
        elif key in working:
            argv += [key, working[key]]
    flags = {a.option_strings[-1] for a in sub._actions if a.nargs == 0 and a.option_strings}
    argv += [flag for flag in ("--random", "--no-cache") if flag in flags]
    return argv


def run_cli(case: dict, baseline: Baseline) -> dict:
    from explorer.cli import main

    word = case["word"]
    if word == "a folder":
        word = str(baseline.folder)
    elif word == "a word":
        word = "zebra"
    elif word == "superscript":
        word = "²"
    elif word == "superscript in a list":
        word = "0,²,1"
    argv = cli_argv(case["cli"], baseline, case["arg"], word)
    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    except Exception as error:  # noqa: BLE001
        return {"outcome": f"bug:{type(error).__name__}", "message": str(error)[:300]}
    # a progress bar may share stderr (carriage returns); the error is the lines naming the command, and no
    # traceback may appear
    lines = err.getvalue().replace("\r", "\n").splitlines()
    errors = [line for line in lines if line.startswith("explorer") or line.startswith("Traceback")]
    return {"outcome": f"exit:{code}", "error_lines": len(errors), "message": err.getvalue()[-300:]}


def main(path: str) -> None:
    import logging

    import torch

    logging.disable(logging.CRITICAL)
    torch.set_num_threads(1)
    sys.setrecursionlimit(3000)
    with open(path) as handle:
        job = json.load(handle)
    cases, first = job["cases"], job["first"]
    with tempfile.TemporaryDirectory() as root:
        os.chdir(root)
        baseline = Baseline(Path(root))
        parameters = dict(targets())
        for index in range(first, len(cases)):
            case = cases[index]
            faulthandler.dump_traceback_later(CASE_TIMEOUT_S, exit=True)
            found = run_cli(case, baseline) if "cli" in case else run_call(case, baseline, parameters)
            faulthandler.cancel_dump_traceback_later()
            print(json.dumps({"case": index, **found}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
