"""Identity by content: a gallery replaced hundreds of times, with images freed and new ones made at the same
addresses, never shows another image's maps (captures are keyed by gallery serials, never by ``id()``)."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from explorer.widgets.engine import Controller
from explorer.widgets.state import ExplorerState

pytestmark = pytest.mark.usefixtures("restored_panel")  # module-scoped panels, reset after each test


@pytest.fixture(scope="module")
def controller():
    state = ExplorerState(model="resnet18", pretrained=False, device="cpu", out_indices=[0])
    controller = Controller(state)  # no view: the maps are the point
    controller.start()
    return controller


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seeds=st.lists(st.integers(0, 6), min_size=1, max_size=3), shown=st.integers(0, 2))
def test_a_replaced_gallery_shows_the_maps_of_the_image_on_show(controller, seeds, shown):
    controller.set_images([_image(seed) for seed in seeds])  # the old images are freed: addresses are reused
    gc.collect()
    controller.state.image_index = min(shown, len(seeds) - 1)
    frame = controller.refresh()
    assert frame.status.level != "error", frame.status.text
    image = frame.gallery.images[frame.state["image_index"]]
    assert np.array_equal(np.asarray(image), np.asarray(_image(seeds[frame.state["image_index"]])))
    fresh = frame.backbone.capture(frame.backbone.pixel_values([image]), layers=["act1"])
    assert torch.equal(
        frame.maps["act1"], fresh["act1"]
    )  # the image on show's own maps, not a cached other's
