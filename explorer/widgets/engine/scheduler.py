"""When the engine works, and where its results go: one worker thread, coalesced requests, and the hand-over of
results to the kernel's thread.

In a kernel (``background=True``), requests made in one turn of the event loop are merged into one on its next
turn, and the work runs in the single worker thread (model work never blocks the kernel); while it works, new
requests are merged again, and the newest state wins. The worker never touches widgets or the state: what it
makes goes into a mailbox, and the event loop captured at construction (the kernel's) empties it on its own
thread (``call_soon_threadsafe``). A load or a forward pass runs in a helper thread that the worker waits on
(:meth:`Scheduler.offload`), so that the worker meanwhile answers requests that need no model (the controller's
interim draws). :meth:`Scheduler.wait` on the loop's thread (a setter in a notebook cell,
which holds the loop) empties the mailbox itself. Outside a kernel (plain Python, pytest) the work and the
delivery run at once in the caller's thread.

Example::

    >>> scheduler = Scheduler(work=lambda post: post("frame"), deliver=print, background=False)
    >>> scheduler.request()
    frame
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import TypeVar

__all__ = ["Scheduler"]

_log = logging.getLogger(__name__)

T = TypeVar("T")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Scheduler:
    """Runs ``work(post)`` when requested; everything ``post``-ed reaches ``deliver`` on the loop's thread.

    Args:
        work: does the pending work; calls ``post(item)`` for each result, in order.
        deliver: shows one result (writes widgets); called on the kernel's thread only.
        background: work in the worker thread (in a kernel), or at once in the caller's thread.
    """

    def __init__(self, work: Callable, deliver: Callable, background: bool) -> None:
        self._work, self._deliver = work, deliver
        self.background = background
        self.loop = _running_loop()  # the kernel's loop (None outside one)
        self._mailbox: deque = deque()
        self._wake = threading.Condition()
        self._wanted = self._working = False
        self._requests = 0  # requests handed to the worker so far (see offload)
        self._turn: asyncio.AbstractEventLoop | None = None  # a loop whose next turn will kick the worker
        self._worker: threading.Thread | None = None
        self._here = 0  # the thread working in the caller's thread (background=False), or 0
        self._again = False
        self._one = threading.Lock()  # one caller works at a time (background=False)

    # -- requests --------------------------------------------------------------------------------------------
    def request(self) -> None:
        """Something changed: work on it (see the module docs)."""
        if not self.background:
            self._work_here()
            return
        loop = _running_loop()
        if loop is None:
            self._kick()
        elif self._turn is not loop:
            self.loop = self.loop or loop
            self._turn = loop
            loop.call_soon(self._kick)

    def _kick(self) -> None:
        self._turn = None
        with self._wake:
            self._wanted = True
            self._requests += 1
            self._wake.notify_all()
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="explorer-engine", daemon=True)
                self._worker.start()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._wanted:
                    self._wake.wait()
                self._wanted, self._working = False, True
            try:
                self._work(self._post)
            except Exception:  # noqa: BLE001 - the work reports its own failures; this keeps the worker alive
                _log.exception("panel engine")
            finally:
                with self._wake:
                    self._working = False
                    self._wake.notify_all()

    def _work_here(self) -> None:
        me = threading.get_ident()
        if self._here == me:  # a delivery corrected the state: the running work goes round again
            self._again = True
            return
        with self._one:
            self._here = me
            try:
                self._again = True
                while self._again:
                    self._again = False
                    self._work(self._post)
                    self._drain()
            finally:
                self._here = 0

    def offload(self, work: Callable[[], T], meanwhile: Callable[[], None]) -> T:
        """In the worker: ``work()`` (a load, a forward pass) in a helper thread, and ``meanwhile()`` here on each
        request made while it runs; returns what ``work`` returned, or raises what it raised. Outside a kernel,
        ``work()`` runs at once."""
        if not self.background or threading.current_thread() is not self._worker:
            return work()
        done, box = threading.Event(), {}

        def run() -> None:
            try:
                box["value"] = work()
            except BaseException as err:  # noqa: BLE001 - raised again in the worker, which reports it
                box["error"] = err
            finally:
                with self._wake:
                    done.set()
                    self._wake.notify_all()

        with self._wake:
            seen = self._requests
        threading.Thread(target=run, name="explorer-model", daemon=True).start()
        while True:
            with self._wake:
                while not done.is_set() and self._requests == seen:
                    self._wake.wait()
                if done.is_set():
                    break
                seen = self._requests
            meanwhile()
        if "error" in box:
            raise box["error"]
        return box["value"]

    # -- results ---------------------------------------------------------------------------------------------
    def _post(self, item: object) -> None:
        self._mailbox.append(item)
        if not self.background:
            return  # delivered by _work_here, in the caller's thread
        loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # closed meanwhile: the next wait() delivers
                pass
        with self._wake:
            self._wake.notify_all()

    def _drain(self) -> None:
        while True:
            try:
                item = self._mailbox.popleft()
            except IndexError:
                return
            try:
                self._deliver(item)
            except Exception:  # noqa: BLE001 - a view that fails to show must not stop the others
                _log.exception("panel delivery")

    def _may_deliver_here(self) -> bool:
        loop = self.loop
        return loop is None or loop.is_closed() or not loop.is_running() or _running_loop() is loop

    # -- waiting ---------------------------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> bool:
        """Wait until everything requested so far is worked and delivered (on the loop's thread, or where no
        loop runs, this thread delivers). False on timeout."""
        if not self.background:
            self._drain()
            return True
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        deliver = self._may_deliver_here()
        while True:
            if self._turn is not None:
                self._kick()  # a hand-over still waiting for its loop's turn: make it now
            if deliver:
                self._drain()  # may correct the state, which requests more work
            with self._wake:
                idle = not self._wanted and not self._working and self._turn is None
                if idle and (not self._mailbox or not deliver):
                    return True
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._wake.wait(0.05 if left is None else min(0.05, left))
