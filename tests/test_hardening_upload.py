"""Hardening, second round (issue 19): the upload widget trusts nothing the browser sends.

Messages are sent to the kernel side as the front end would (``Upload._on_message``); generated hostile messages
(every field wrong in every way) are refused with one status-line report each and leave nothing held; the memory a
hostile message costs is measured in a fresh interpreter.
"""

from __future__ import annotations

import asyncio
import itertools
import tracemalloc

import pytest

from explorer.widgets.elements import (
    MAX_IN_FLIGHT,
    MAX_PENDING_BYTES,
    MAX_UPLOAD_BYTES,
    UPLOAD_TIMEOUT,
    Upload,
)

CHUNK = 1024


class Recorder:
    def __init__(self) -> None:
        self.files: list[tuple[str, bytes]] = []
        self.refused: list[tuple[str, int]] = []
        self.errors: list[str] = []
        self.now = 0.0

    def upload(self) -> Upload:
        return Upload(
            on_file=lambda name, data: self.files.append((name, data)),
            on_refused=lambda name, size: self.refused.append((name, size)),
            on_error=self.errors.append,
            clock=lambda: self.now,
            chunk_bytes=CHUNK,
        )


def chunks(data: bytes, key: str = "a", name: str = "f.png") -> list[tuple[dict, list]]:
    count = max(1, -(-len(data) // CHUNK))
    return [
        (
            {"event": "chunk", "id": key, "name": name, "size": len(data), "index": i, "count": count},
            [memoryview(data[i * CHUNK : (i + 1) * CHUNK])],
        )
        for i in range(count)
    ]


def send(upload: Upload, content, buffers) -> None:
    upload._on_message(upload, content, buffers)


def test_a_file_in_chunks_in_any_order_arrives_whole():
    recorder = Recorder()
    upload = recorder.upload()
    data = bytes(range(256)) * 13  # 3,328 bytes: 4 chunks, the last one short
    for content, buffers in reversed(chunks(data)):
        send(upload, content, buffers)
    send(upload, *chunks(b"", key="b", name="empty.png")[0])
    assert recorder.files == [("f.png", data), ("empty.png", b"")]
    assert recorder.errors == [] and upload.pending_bytes == 0


def _hostile_fields() -> dict[str, list]:
    return {
        "count": [0, -1, 10**9, 2**63, "4", 4.0, None, [4], True, 3, 5],
        "index": [-1, 4, 10**9, "0", 0.5, None, [0], True],
        "size": ["3328", -5.5, None, [1], True, 10, 0],
        "id": [None, 7, "", "x" * 65, ["a"], {"a": 1}],
        "name": [None, 7, ["a"], "n" * 5000],
        "event": ["chunks", None, 1, ["chunk"], "\x00"],
    }


def _hostile_messages():
    """Every field of a valid first chunk made wrong in each way; plus wrong buffers and non-mappings."""
    good, buffers = chunks(bytes(3328))[0]
    for key, values in _hostile_fields().items():
        for value in values:
            yield f"{key}={value!r:.20}", {**good, key: value}, buffers
    for name, wrong in {
        "no buffer": [],
        "two buffers": buffers * 2,
        "short buffer": [memoryview(bytes(10))],
        "long buffer": [memoryview(bytes(CHUNK + 1))],
        "None buffers": None,
    }.items():
        yield name, good, wrong
    for content in (None, [], "chunk", 7, {"event": "chunk"}):
        yield f"content={content!r}", content, buffers


def test_every_hostile_message_is_refused_reported_and_drops_its_file():
    cases = list(_hostile_messages())
    failures = []
    for label, content, buffers in cases:
        recorder = Recorder()
        upload = recorder.upload()
        try:
            send(upload, content, buffers)
        except Exception as err:  # noqa: BLE001 - the family's failure: anything escaping the handler
            failures.append(f"{label}: {type(err).__name__}")
            continue
        if recorder.files or upload.pending_bytes:
            failures.append(f"{label}: kept")
        elif len(recorder.errors) + len(recorder.refused) != 1:
            failures.append(f"{label}: {len(recorder.errors)} reports")
    assert len(cases) == 51 and failures == []


def test_a_declared_size_over_the_limit_is_refused_on_the_kernel_side():
    recorder = Recorder()
    upload = recorder.upload()
    count = -(-(MAX_UPLOAD_BYTES + 1) // CHUNK)
    message = {
        "event": "chunk",
        "id": "a",
        "name": "big",
        "size": MAX_UPLOAD_BYTES + 1,
        "index": 0,
        "count": count,
    }
    send(upload, message, [memoryview(bytes(CHUNK))])
    assert recorder.refused == [("big", MAX_UPLOAD_BYTES + 1)] and upload.pending_bytes == 0


def test_a_chunk_that_contradicts_its_file_or_repeats_drops_the_file():
    for change in ({"name": "other"}, {"size": 3000}, {"index": 0}):
        recorder = Recorder()
        upload = recorder.upload()
        parts = chunks(bytes(3328))
        send(upload, *parts[0])
        second = {**parts[1][0], **change}
        count = max(1, -(-second["size"] // CHUNK))
        second["count"] = count
        buffers = [memoryview(bytes(min(CHUNK, second["size"] - second["index"] * CHUNK)))]
        send(upload, second, buffers)
        assert recorder.errors and upload.pending_bytes == 0, change
        for content, rest in parts[2:]:
            send(upload, content, rest)
        assert recorder.files == [], change


def test_uploads_in_flight_are_bounded_and_unfinished_ones_expire():
    recorder = Recorder()
    upload = recorder.upload()
    for key in "abcdef":
        send(upload, *chunks(bytes(3000), key=key)[0])
    assert len(upload._files) == MAX_IN_FLIGHT and len(recorder.errors) == 6 - MAX_IN_FLIGHT
    assert upload.pending_bytes == MAX_IN_FLIGHT * CHUNK
    recorder.now += UPLOAD_TIMEOUT + 1
    send(upload, *chunks(b"xy", key="g")[0])  # any message expires the stale ones first
    assert upload.pending_bytes == 0 and recorder.files == [("f.png", b"xy")]
    assert sum("stopped before it was complete" in e for e in recorder.errors) == MAX_IN_FLIGHT


def test_an_unfinished_upload_is_dropped_by_the_timer_with_no_further_message():
    """In a kernel the timer runs on the event loop: the file is dropped and reported although the browser never
    sends another message; a file that completes in time is delivered and leaves no timer behind."""
    recorder = Recorder()

    async def scenario() -> None:
        dropped = asyncio.Event()
        upload = Upload(
            on_file=lambda name, data: recorder.files.append((name, data)),
            on_refused=lambda *_: None,
            on_error=lambda message: (recorder.errors.append(message), dropped.set()),
            chunk_bytes=CHUNK,
            timeout=0.05,
        )
        send(upload, *chunks(bytes(3000), key="stalled")[0])
        assert upload.pending_bytes == CHUNK and upload._timer is not None
        await asyncio.wait_for(dropped.wait(), timeout=60)  # a bound on a hang, not a timing
        assert upload.pending_bytes == 0 and upload._timer is None
        for message in chunks(b"whole", key="quick"):
            send(upload, *message)
        assert upload._timer is None and recorder.files == [("f.png", b"whole")]

    asyncio.run(scenario())
    assert len(recorder.errors) == 1 and "stopped before it was complete" in recorder.errors[0]


def test_pending_bytes_are_capped_across_files():
    recorder = Recorder()
    upload = Upload(
        on_file=lambda *_: None,
        on_refused=lambda *_: None,
        on_error=recorder.errors.append,
        chunk_bytes=8 * 2**20,
    )
    big = 8 * 2**20
    size = MAX_UPLOAD_BYTES
    count = size // big
    held = 0
    for key, index in itertools.product("abc", range(count - 1)):
        message = {"event": "chunk", "id": key, "name": key, "size": size, "index": index, "count": count}
        send(upload, message, [memoryview(bytearray(big))])
        held = max(held, upload.pending_bytes)
    assert held <= MAX_PENDING_BYTES and recorder.errors


@pytest.mark.parametrize("count", [10**7, 10**8])
def test_a_hostile_chunk_count_costs_no_memory(count):
    """A first chunk announcing ``count`` chunks is refused (its count does not match its size) and
    allocates nothing in proportion to ``count`` on the way: the Python
    memory it takes (tracemalloc's exact count, not the process's resident size) stays under 64 KiB."""
    recorder = Recorder()
    upload = recorder.upload()
    message = {"event": "chunk", "id": "x", "name": "x", "size": 1, "index": 0, "count": count}
    tracemalloc.start()
    try:
        send(upload, message, [memoryview(b"x")])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 10, peak
    assert upload.pending_bytes == 0 and "count=" in " ".join(recorder.errors), recorder.errors
