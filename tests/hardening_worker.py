"""Loads generated cases in a process of its own, for tests/test_hardening_property.py: a case that hangs or
exhausts memory kills this process, not the test run.

Usage: ``python tests/hardening_worker.py cases.json``. Each case is ``{"spec": ..., "kwargs": {...}}``; one JSON
line per case goes to stdout: ``{"case": i, "outcome": "ok" | <ExplorerError class> | "bug:<class>",
"message": ..., "note": ..., "read_bytes": bytes of the tensors torch.load and safetensors returned}``. A case running past
``CASE_TIMEOUT_S`` makes faulthandler print every thread's stack and exit, so the parent sees where it hung.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import warnings

os.environ["HF_HUB_OFFLINE"] = "1"

CASE_TIMEOUT_S = 60.0


READ: list[int] = []  # bytes of the tensors each checkpoint read returned, for the current case


def _tensor_bytes(value: object, seen: set[int]) -> int:
    """Bytes of the tensors in a loaded checkpoint (dicts and lists followed, a dict containing itself once)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.untyped_storage().nbytes()
    if id(value) in seen or not isinstance(value, (dict, list, tuple)):  # id: cycle detection only
        return 0
    seen.add(id(value))
    items = value.values() if isinstance(value, dict) else value
    return sum(_tensor_bytes(item, seen) for item in items)


def _spy_on_reads() -> None:
    """Record what every torch.load and safetensors load_file call returned, in READ."""
    import safetensors.torch
    import torch

    def spy(read):
        def counted(*args, **kwargs):
            value = read(*args, **kwargs)
            READ.append(_tensor_bytes(value, set()))
            return value

        return counted

    torch.load = spy(torch.load)
    safetensors.torch.load_file = spy(safetensors.torch.load_file)


def run_case(case: dict) -> dict:
    import torch

    import explorer

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bb = explorer.load_backbone(case["spec"], device="cpu", **case.get("kwargs", {}))
            height, width = bb.preprocess.input_size
            maps = bb(torch.zeros(1, 3, height, width))
    except explorer.ExplorerError as err:
        return {"outcome": type(err).__name__, "message": str(err)}
    except Exception as err:  # noqa: BLE001 - anything else is a bug the parent reports
        return {"outcome": f"bug:{type(err).__name__}", "message": str(err)[:2000]}
    return {
        "outcome": "ok",
        "note": bb.weights_note,
        "weights": bb.weights,
        "input_size": list(bb.preprocess.input_size),
        "finite": all(bool(torch.isfinite(fmap).all()) for fmap in maps.values()),
    }


def main(path: str) -> None:
    import torch

    torch.set_num_threads(1)
    _spy_on_reads()
    with open(path) as handle:
        cases = json.load(handle)
    for index, case in enumerate(cases):
        READ.clear()
        faulthandler.dump_traceback_later(CASE_TIMEOUT_S, exit=True)
        result = run_case(case)
        faulthandler.cancel_dump_traceback_later()
        result.update(case=index, read_bytes=sum(READ))
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
