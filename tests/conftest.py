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
