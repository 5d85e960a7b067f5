"""Every public function and CLI subcommand under hostile arguments (issue 19), generated from the live API.

``tests/api_fuzz.py`` lists what the package exports now and gives each argument, in turn, values of every
hostile family (wrong types, empty, huge, negative, NaN, NUL-bearing, deeply nested) while the other arguments
work. Cases run in batches in child processes (a case that hangs past its timeout, or kills its process, is
recorded and the batch goes on in a new child). What must hold: the only exceptions that escape are
``ExplorerError``s; the CLI exits 0 or 2, and on 2 prints exactly one line.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import api_fuzz
import pytest

HERE = Path(__file__).parent
BATCH_TIMEOUT_S = 900


def failure(case: dict, result: dict | None) -> str | None:
    """Why a case's result breaks the rules, or None."""
    if result is None:
        return "hang or crash"
    outcome = result["outcome"]
    if outcome.startswith("bug:"):
        return f"{outcome}: {result.get('message', '')[:120]}"
    if "cli" in case and outcome.startswith("exit:"):
        code = outcome.split(":", 1)[1]
        if code not in ("0", "2"):
            return f"exit {code}"
        if code == "2" and result["error_lines"] != 1:
            return f"{result['error_lines']} error lines on stderr: {result.get('message', '')[:120]!r}"
    return None


def run_cases(cases: list[dict], tmp: Path, pythonpath: str | None = None) -> list[dict | None]:
    """Each case's result (None: it hung or killed its child), running children until every case is done."""
    results: list[dict | None] = [None] * len(cases)
    job = tmp / "cases.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath or env.get("PYTHONPATH", ""), str(HERE)]))
    first = 0
    while first < len(cases):
        job.write_text(json.dumps({"cases": cases, "first": first}))
        try:
            done = subprocess.run(
                [sys.executable, str(HERE / "api_fuzz.py"), str(job)],
                capture_output=True,
                text=True,
                timeout=BATCH_TIMEOUT_S,
                env=env,
                cwd=tmp,
            )
            stdout = done.stdout
        except subprocess.TimeoutExpired as expired:
            stdout = (
                (expired.stdout or b"").decode()
                if isinstance(expired.stdout, bytes)
                else expired.stdout or ""
            )
        last = first - 1
        for line in stdout.splitlines():
            if line.startswith('{"case"'):
                record = json.loads(line)
                results[record["case"]] = record
                last = record["case"]
        first = last + 2  # the case after the last reported one hung or crashed: recorded as None
    return results


def summary(cases: list[dict], results: list[dict | None]) -> dict[str, tuple[int, int]]:
    """``{family: (cases, failed)}``."""
    counts: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for case, result in zip(cases, results):
        counts[case["family"]][0] += 1
        counts[case["family"]][1] += failure(case, result) is not None
    return {family: (n, bad) for family, (n, bad) in counts.items()}


def test_every_public_name_is_called_or_skipped_with_a_reason():
    """Nothing public is left out silently: each function is called, each class with methods has a working
    instance whose methods are called (or a reason in SKIPPED), and only the panel is skipped."""
    import explorer

    called = {name for name, _ in api_fuzz.targets()}
    for name in explorer.__all__:
        obj = getattr(explorer, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            continue
        if isinstance(obj, type):
            covered = (
                name in api_fuzz.OWNERS
                or name in api_fuzz.SKIPPED
                or name in api_fuzz.NOT_YET_CALLED
                or not api_fuzz.methods(obj)
            )
            assert covered, f"{name} has public methods but no working instance in api_fuzz.OWNERS"
        else:
            assert name in called or name in api_fuzz.SKIPPED, name
    assert set(api_fuzz.SKIPPED) == {"Explorer", "ExplorerState", "Backbone", "Scan", "Concepts"}
    assert {"Backbone", "Scan", "Concepts"} <= set(api_fuzz.OWNERS)
    assert api_fuzz.NOT_YET_CALLED == {}  # every public class with methods is called now


@pytest.mark.slow
def test_only_explorer_errors_escape_the_public_api(tmp_path):
    cases = api_fuzz.generate()
    calls = {case["call"] for case in cases if "call" in case}
    commands = {case["cli"] for case in cases if "cli" in case}
    assert {"scan", "cam", "load_backbone", "render_grid", "scan.top", "bb.extract"} <= calls
    assert {
        "pca",
        "similarity",
        "attention",
        "visualize",
        "concepts",
        "con.load",
        "attention_figure",
    } <= calls
    every = set(api_fuzz.cli_arguments(skipped={}))
    assert commands == every - set(api_fuzz.CLI_SKIPPED) and set(api_fuzz.CLI_SKIPPED) == {"lab"}
    assert set(summary(cases, [None] * len(cases))) == set(api_fuzz.FAMILIES)
    results = run_cases(cases, tmp_path)
    counts = summary(cases, results)
    print("\ngenerated cases per family (cases, failed):", json.dumps(counts))
    (tmp_path / "counts.json").write_text(json.dumps(counts))
    failed = [
        f"{case.get('call') or case.get('cli')}({case.get('param') or case.get('arg')}={case.get('kind') or case.get('word')!r:.30}): {why}"
        for case, result in zip(cases, results)
        if (why := failure(case, result)) is not None
    ]
    assert failed == [], f"{len(failed)} of {len(cases)} cases:\n" + "\n".join(failed[:60])
