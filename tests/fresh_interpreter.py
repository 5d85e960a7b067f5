"""Run the code ``app.code()`` gives in a fresh Python interpreter, as a user pasting it would, and return the PNG
bytes each snippet leaves in its ``png`` variable (shared by the panel tests that check code runs as given)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    pngs = []
    for code in json.loads(sys.stdin.read()):
        scope = {}
        exec(code, scope)
        pngs.append(scope["png"].hex())
    print(json.dumps(pngs))
    """
)


def pngs_of(codes: list[str], cwd: str | os.PathLike, timeout: float) -> list[bytes]:
    """Each snippet of ``codes`` run in turn in one fresh interpreter (offline, this checkout's explorer) from
    ``cwd``; the bytes of its ``png``. A snippet that fails fails the caller with the interpreter's stderr."""
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        input=json.dumps(codes),
        capture_output=True,
        text=True,
        cwd=cwd,
        env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=ROOT),
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    return [bytes.fromhex(h) for h in json.loads(result.stdout.strip().splitlines()[-1])]
