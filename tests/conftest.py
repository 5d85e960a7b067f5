"""Test set-up: no network, no shared caches, small thread count, fixed seeds."""

from __future__ import annotations

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="explorer-hf-home-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def default_backbone():
    """The built-in default with its packaged ImageNet weights, every stage selected (shared: read-only)."""
    import explorer

    return explorer.load_backbone("default", out_indices=[0, 1, 2, 3, 4], device="cpu")


@pytest.fixture(scope="session")
def samples():
    import explorer

    return explorer.sample_images(["chelsea", "coffee"])


@pytest.fixture(scope="session")
def transformers():
    """The transformers module; only the tests that ask for it skip without it (not their whole file)."""
    return pytest.importorskip("transformers")


@pytest.fixture(scope="session")
def tiny_hf_folder(tmp_path_factory, transformers):
    """A tiny transformers ResNet backbone saved with save_pretrained (shared: copy it before changing it)."""
    folder = tmp_path_factory.mktemp("tiny-hf-resnet")
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])
    transformers.ResNetBackbone(config).save_pretrained(folder)
    return folder


@pytest.fixture
def restored_panel(request):
    """Puts each module-scoped panel a test used (an ``app`` or a ``controller`` fixture) back as it was: every
    state trait, and the gallery (uploads included), restored in ``finally``; the panel is built once per file.
    Use it with ``pytestmark = pytest.mark.usefixtures("restored_panel")``."""
    import numpy as np

    panels = [request.getfixturevalue(name) for name in ("app", "controller") if name in request.fixturenames]
    controllers = [getattr(panel, "controller", panel) for panel in panels]
    saved = [(c, c.state.snapshot(), list(c.frame.gallery.images)) for c in controllers]
    try:
        yield
    finally:
        for controller, traits, gallery in saved:
            state = controller.state
            with state.hold_trait_notifications():
                for name, value in traits.items():
                    if state.snapshot()[name] != value:  # List traits snapshot as tuples
                        setattr(state, name, list(value) if isinstance(getattr(state, name), list) else value)
            shown = list(controller.frame.gallery.images)
            if len(shown) != len(gallery) or any(
                not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(shown, gallery)
            ):
                controller.set_images(gallery)
            controller.refresh()
