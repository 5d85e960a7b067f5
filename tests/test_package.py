"""The package itself: a cheap import, and the public names of DESIGN.md."""

from __future__ import annotations

import subprocess
import sys

import explorer


def test_import_loads_no_torch_timm_or_transformers():
    code = "import sys, explorer; print(sorted(m for m in ('torch', 'timm', 'transformers') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


DESIGN_NAMES = [  # the public API of DESIGN.md: a contract with code outside the project
    "load_backbone",
    "list_backbones",
    "list_layers",
    "channel_stats",
    "render_grid",
    "to_png",
    "overlay",
    "Explorer",
    "Backbone",
    "Stage",
    "FeatureMaps",
]


def test_public_names_resolve():
    for name in DESIGN_NAMES + explorer.__all__:
        assert getattr(explorer, name) is not None, name
    backbone_attributes = ["stage_names", "out_indices", "out_features", "channels", "reductions", "stages"]
    for name in backbone_attributes + ["weights", "device", "model", "extract", "capture"]:
        assert hasattr(explorer.Backbone, name) or name in ("weights", "model"), name


def test_every_error_class_is_reachable_but_only_the_base_is_in_all():
    import explorer.errors

    for name in explorer.errors.__all__:  # code outside the project writes ``except explorer.ImageError``
        assert getattr(explorer, name) is getattr(explorer.errors, name), name
        assert name in dir(explorer), name
    assert [name for name in explorer.__all__ if name.endswith("Error")] == ["ExplorerError"]
    assert issubclass(explorer.InvalidArgumentError, ValueError) and issubclass(
        explorer.InvalidArgumentError, TypeError
    )
    namespace: dict = {}
    exec("from explorer import *", namespace)
    assert "ExplorerError" in namespace and "ImageError" not in namespace and "render_grid" in namespace
