"""The camera widget's kernel side, driven as its front end would: frame messages in, acknowledgements out."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from traitlets import TraitError

from explorer.errors import InvalidArgumentError
from explorer.widgets.camera import Camera


def _jpeg(colour: tuple[int, int, int], size=(32, 24)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="JPEG", quality=95)
    return out.getvalue()


def _camera(monkeypatch, **kwargs):
    camera = Camera(**kwargs)
    sent = []
    monkeypatch.setattr(camera, "send", lambda content, buffers=None: sent.append(content))
    return camera, sent


def test_each_frame_reaches_the_callback_then_is_acknowledged(monkeypatch):
    seen = []
    camera, sent = _camera(monkeypatch, on_frame=lambda image: seen.append((np.asarray(image), list(sent))))
    assert camera.image is None
    camera._on_message(camera, {"event": "frame", "seq": 7}, [memoryview(_jpeg((200, 30, 30)))])
    pixels, acks_during_callback = seen[0]
    assert pixels.shape == (24, 32, 3) and abs(int(pixels[..., 0].mean()) - 200) < 5
    assert acks_during_callback == []  # back-pressure: no acknowledgement while the callback runs
    assert sent == [{"ack": 7}] and camera.frames == 1
    assert camera.frame == _jpeg((200, 30, 30)) and camera.image.size == (32, 24)
    camera._on_message(camera, {"event": "frame", "seq": 8}, [_jpeg((10, 10, 220))])
    assert sent[-1] == {"ack": 8} and camera.frames == 2 and np.asarray(camera.image)[..., 2].mean() > 200


def test_undecoded_frames_reach_the_callback_as_jpeg_bytes(monkeypatch):
    seen = []
    camera, sent = _camera(monkeypatch, on_frame=seen.append, decode=False)
    camera._on_message(camera, {"event": "frame", "seq": 2}, [memoryview(_jpeg((30, 200, 30)))])
    assert seen == [_jpeg((30, 200, 30))] and isinstance(seen[0], bytes)  # the owner decodes them itself
    assert sent == [{"ack": 2}] and camera.image.size == (32, 24)


def test_a_failing_callback_still_acknowledges(monkeypatch):
    def fail(image):
        raise ValueError("model broke")

    camera, sent = _camera(monkeypatch, on_frame=fail)
    with pytest.raises(ValueError, match="model broke"):
        camera._on_message(camera, {"event": "frame", "seq": 3}, [_jpeg((0, 0, 0))])
    assert sent == [{"ack": 3}]  # the camera keeps sending


def test_later_acknowledgement_waits_for_the_owner(monkeypatch):
    camera, sent = _camera(monkeypatch, on_frame=lambda image: None, acknowledge="later")
    camera._on_message(camera, {"event": "frame", "seq": 4}, [_jpeg((0, 200, 0))])
    assert sent == [] and camera.frames == 1 and camera.acknowledged == 0  # drawn elsewhere, not yet
    camera.acknowledge()
    assert sent == [{"ack": 4}] and camera.acknowledged == 1
    camera.acknowledge()  # nothing waits: nothing sent twice
    assert sent == [{"ack": 4}]
    failing = Camera(on_frame=lambda image: 1 / 0, acknowledge="later")
    monkeypatch.setattr(failing, "send", lambda content, buffers=None: sent.append(content))
    with pytest.raises(ZeroDivisionError):
        failing._on_message(failing, {"event": "frame", "seq": 9}, [_jpeg((0, 0, 0))])
    assert sent[-1] == {"ack": 9}  # a frame that failed is acknowledged at once
    with pytest.raises(InvalidArgumentError, match="on_return"):
        Camera(acknowledge="never")


def test_other_messages_are_ignored_and_errors_come_from_the_front_end(monkeypatch):
    camera, sent = _camera(monkeypatch, on_frame=lambda image: pytest.fail("no frame was sent"))
    camera._on_message(camera, {"event": "frame", "seq": 1}, [])
    camera._on_message(camera, {"event": "hello"}, [b"x"])
    assert sent == [] and camera.frames == 0
    camera.set_state({"error": "The camera could not be opened (NotAllowedError: Permission denied)."})
    assert camera.error.startswith("The camera could not be opened")


@pytest.mark.parametrize(
    "trait, value, message",
    [
        ("max_fps", 0, "above 0"),
        ("max_fps", 120, "at most 60"),
        ("width", 8, "16 to 4096"),
        ("quality", 2, "quality"),
    ],
)
def test_settings_are_validated(trait, value, message):
    with pytest.raises(TraitError, match=message):
        Camera(**{trait: value})
