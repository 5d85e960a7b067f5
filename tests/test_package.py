"""The package itself: a cheap import, and the public names of DESIGN.md."""

from __future__ import annotations

import subprocess
import sys

import explorer


def test_import_loads_no_torch_timm_or_transformers():
    code = "import sys, explorer; print(sorted(m for m in ('torch', 'timm', 'transformers') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_public_names_resolve():
    for name in explorer.__all__:
        assert getattr(explorer, name) is not None, name
