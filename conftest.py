"""What the docstring examples in ``explorer/`` run against (``pytest --doctest-modules explorer``): every public
name of ``explorer`` (as after ``from explorer import *``), NumPy and torch, and the objects the examples name,
built once, offline, on the CPU: the built-in default (packaged weights) with every stage selected, its maps of
the sample cat (``maps``, ``before``) and of the astronaut (``after``), and ``fmap`` (the cat's ``blocks.2``).
Each example runs in a temporary folder of its own."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402


def doctest_names() -> dict:
    """The names above, built (a few seconds: the default model runs twice)."""
    import numpy as np
    import torch

    import explorer

    torch.manual_seed(0)
    photos = explorer.sample_images()
    cat, astronaut = photos["chelsea"], photos["astronaut"]
    bb = explorer.load_backbone("default", out_indices=[0, 1, 2, 3, 4], device="cpu")
    maps = bb.extract(cat)
    names = {name: getattr(explorer, name) for name in explorer.__all__}
    names.update(
        explorer=explorer,
        np=np,
        torch=torch,
        bb=bb,
        cat=cat,
        image=cat,
        photos=photos,
        maps=maps,
        before=maps,
        after=bb.extract(astronaut),
        fmap=maps["blocks.2"][0],
    )
    return names


@pytest.fixture(scope="session")
def _doctest_names():
    return doctest_names()


@pytest.fixture(autouse=True)
def _doctest_namespace(request, doctest_namespace):
    if isinstance(request.node, pytest.DoctestItem):
        doctest_namespace.update(request.getfixturevalue("_doctest_names"))
        # the files an example writes ("report/", "grid.png") go to a folder of its own
        request.getfixturevalue("monkeypatch").chdir(request.getfixturevalue("tmp_path"))
