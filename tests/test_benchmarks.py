"""Smoke tests of the benchmark suite: the runner's interleaving, and one suite at its smallest. No timing asserts."""

from __future__ import annotations

import json
import math

import torch

from benchmarks import report, suites  # importable through pytest's pythonpath (pyproject.toml)
from benchmarks.timing import Method, Timing, run_interleaved


def test_runner_interleaves_warms_up_and_spreads_slow_methods():
    calls = []
    methods = [
        Method("a", lambda: calls.append("a")),
        Method("b", lambda: calls.append("b"), repeats=2, warmup=0),
        Method(
            "c",
            lambda: calls.append("c"),
            setup=lambda: calls.append("c+"),
            teardown=lambda: calls.append("c-"),
        ),
    ]
    timings = run_interleaved(methods, repeats=4, warmup=1)
    rounds = ["a", "c+", "c", "c-"]  # warm-up: b has none
    rounds += ["a", "b", "c+", "c", "c-"] + ["a", "c+", "c", "c-"]  # b in rounds 0 and 2 of 4
    rounds += ["a", "b", "c+", "c", "c-"] + ["a", "c+", "c", "c-"]
    assert calls == rounds
    assert [t.n for t in timings.values()] == [4, 2, 4]


def test_timing_summaries():
    timing = Timing("x", [4.0, 1.0, 3.0, 2.0, 100.0])
    assert timing.median_ms == 3.0
    assert timing.quartiles_ms == (2.0, 4.0)
    assert timing.iqr_ms == 2.0
    assert math.isnan(Timing("empty").median_ms)


def test_render_suite_smallest_case_and_report(tmp_path):
    threads = torch.get_num_threads()
    rows = suites.render_suite(suites.QUICK, "cpu", shapes=[(16, 8, 8)], repeats=1, warmup=0)
    assert len(rows) == 1
    row = rows[0]
    assert row["shape"] == [16, 8, 8]
    expected = [suites.OURS_RENDER, suites.OURS_GRID, suites.NUMPY, suites.NUMPY_FAST, suites.MATPLOTLIB]
    if threads > 1:
        expected.append(suites.OURS_ONE_THREAD)
    assert list(row["methods"]) == expected
    assert torch.get_num_threads() == threads  # the 1-thread variant restored the pool
    for entry in row["methods"].values():
        assert entry["n"] == 1 and len(entry["samples_ms"]) == 1 and entry["median_ms"] > 0
    # every PNG-producing method reported its output size; render_grid alone returns an array
    assert set(row["png_bytes"]) == set(expected) - {suites.OURS_GRID}
    assert all(size > 100 for size in row["png_bytes"].values())

    results = {"environment": report.environment("cpu", 1, "pytest"), "render": rows, "quick": True}
    results["targets"] = report.evaluate_targets(results)
    by_name = {t["target"].split(" <")[0].split(" >")[0]: t for t in results["targets"]}
    assert by_name["All-stage capture"]["met"] is None  # not measured
    assert {t["met"] for t in results["targets"]} == {None}  # no (256, 56, 56) map: render targets unmeasured
    paths = report.write_all(results, tmp_path)
    assert [p.name for p in paths] == ["results.json", "RESULTS.md", "results.png"]
    assert json.loads(paths[0].read_text())["render"][0]["shape"] == [16, 8, 8]
    markdown = paths[1].read_text()
    assert "| (16, 8, 8) | matplotlib subplot grid |" in markdown
    assert paths[2].read_bytes()[:4] == b"\x89PNG"


def test_every_child_that_writes_files_is_given_the_out_folder(tmp_path, monkeypatch):
    # python -m benchmarks --out DIR: no child may write into benchmarks/ instead (a run overwrote the checkout)
    import subprocess
    import sys

    from benchmarks import __main__ as runner

    commands = []

    def fake_run(command, **_):
        commands.append(command)
        return subprocess.CompletedProcess(command, 0, stdout="", stderr="")

    monkeypatch.setattr(runner.subprocess, "run", fake_run)
    args = runner._arguments(["--quick", "--out", str(tmp_path), "--threads", "1"])
    for name in runner.CHILDREN:
        runner._run_child(name, args)
    by_module = {command[2]: command[3:] for command in commands}
    assert all(command[0] == sys.executable and command[1] == "-m" for command in commands)
    for module in runner.CHILDREN.values():
        options = by_module[module[0]]
        assert options[options.index("--out") + 1] == str(tmp_path), module


def test_the_readme_table_is_the_one_the_committed_results_give():
    # the README quotes one run's results files and nothing typed by hand: rerun python -m benchmarks.summary
    from benchmarks import summary

    assert summary.main(["--check"]) == 0


def test_the_summary_refuses_results_of_several_runs(tmp_path):
    import shutil

    import pytest

    from benchmarks import summary

    for filename in summary.FILES.values():
        shutil.copy(summary.HERE / filename, tmp_path / filename)
    assert summary.table(summary.load(tmp_path)).count("\n| ") >= 15
    cam = json.loads((tmp_path / "cam_results.json").read_text())
    cam["environment"]["explorer_revision"] = "0000000"
    (tmp_path / "cam_results.json").write_text(json.dumps(cam))
    with pytest.raises(summary.MixedRunsError, match="different revisions"):
        summary.load(tmp_path)
    (tmp_path / "feature_vis.json").unlink()
    with pytest.raises(summary.MixedRunsError, match="feature_vis.json is missing"):
        summary.load(tmp_path)


def test_browser_section_reports_the_patches_targets():
    """The browser benchmark's section gives the similarity click and the camera's rates with their targets."""
    from benchmarks import browser

    opening = {"visible_s": 1.0, "first_grid_s": 2.0, "bytes_in": 1000, "frames_in": 3}
    change = {"first_ms": 50, "settled_ms": 80, "frames_in": 4, "bytes_in": 2048, "frames_out": 1}
    patches = {
        "click_first_ms": 40,
        "click_settled_ms": 120,
        "click_bytes_in": 9 * 1024,
        "click_samples": [{}] * 3,
        "camera_fps": {"pca": 10.5, "similarity": 9.8},
    }
    entry = {"repeats": 3, "opening": opening, "changes": {"colour map": change}, "patches": patches}
    text = browser.markdown({"run": entry})
    assert "| similarity click, Patches (target < 100 ms settled) | 40 / 120 | n/a / 9 / n/a |" in text
    assert (
        "| live camera, PCA / Similarity pictures drawn (target >= 10 per s) | 10.50 / 9.80 per s |" in text
    )
    assert "settled in 120 ms" in text and "target < 100 ms: not met" in text and "1 of 2 met" in text
