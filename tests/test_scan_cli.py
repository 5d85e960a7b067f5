"""``explorer scan``: the report from the command line, and one line with exit status 2 for bad input."""

from __future__ import annotations

import pytest
from test_scan import write_images

import explorer
from explorer import cli


def test_scan_command_writes_the_report(tmp_path, capsys):
    images = tmp_path / "images"
    write_images(images, 5)
    out = tmp_path / "report"
    argv = ["scan", "resnet18", str(images), "--random", "--stage", "layer1", "--k", "2", "--out", str(out)]
    status = cli.main([*argv, "--workers", "0", "--batch-size", "4", "--cache", str(tmp_path / "cache")])
    printed = capsys.readouterr().out
    assert status == 0
    assert f"{out / 'index.html'}: Scan('resnet18', 5 images, 0 skipped, k=2" in printed
    page = (out / "layer1.html").read_text()
    assert page.count("<figure>") == 64 * 2
    loaded = explorer.Scan.load(out)
    assert loaded.stages == ["layer1"] and len(loaded) == 5
    assert len(list((tmp_path / "cache").iterdir())) == 1  # cached, so the same command again is instant


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing-folder"], "No folder at"),
        (["{empty}"], "holds no image files"),
        (["{images}", "--stage", "layer9"], "out_features must be a subset of stage_names"),
        (["{images}", "--layer", "nope"], 'No layer named "nope"'),
        (["{images}", "--k", "0"], "k=0"),
        (["{images}", "--cache", "{file}/scans"], "Cannot write the scan cache"),
    ],
)
def test_scan_command_bad_input_is_one_line(tmp_path, capsys, args, message):
    images = tmp_path / "images"
    write_images(images, 2)
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    names = {"images": images, "empty": tmp_path / "empty", "file": tmp_path / "file"}
    args = [a.format(**names) for a in args]
    in_memory = [] if "--cache" in args else ["--no-cache"]
    status = cli.main(["scan", "resnet18", args[0], "--random", "--workers", "0", *in_memory, *args[1:]])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("explorer: ") and err.count("\n") == 1 and message in err
