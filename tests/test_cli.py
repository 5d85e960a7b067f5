"""The explorer command."""

from __future__ import annotations

import csv

import numpy as np
from PIL import Image

from explorer.cli import main


def test_stages_prints_the_table(capsys):
    assert main(["stages", "resnet18", "--random", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "layer2" in out and "(128, 28, 28)" in out and "weights='random'" in out


def test_render_and_stats_write_files(tmp_path, capsys):
    image = tmp_path / "gradient.png"
    Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (200, 1))).save(image)
    out = tmp_path / "grid.png"
    assert (
        main(
            [
                "render",
                "default",
                str(image),
                "--stage",
                "blocks.2",
                "--channels",
                "first:16",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    grid = Image.open(out)
    assert grid.format == "PNG" and grid.width > 100
    table = tmp_path / "stats.csv"
    assert main(["stats", "default", str(image), "--stage", "blocks.1.0.conv_dw", "--csv", str(table)]) == 0
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 96 and "sparsity" in rows[0]
    assert "blocks.1.0.conv_dw (96, 56, 56)" in capsys.readouterr().out


def test_errors_are_one_line(capsys):
    assert main(["stages", "resnet-18", "--random"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("explorer: Unknown model") and "resnet18" in err
