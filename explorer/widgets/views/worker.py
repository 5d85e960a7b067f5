"""A tab's own worker: runs a tab's slow jobs (a scan, a class-activation map) one after another in a thread, so
the kernel stays free and the panel's own updates never wait for them.

Example::

    >>> worker = TabWorker("explorer-cam", on_error=print)
    >>> worker.run(lambda: 1 + 1)
    >>> worker.wait(5)
    True
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["TabWorker"]


class TabWorker:
    """Jobs in order, each in its own thread once the previous one has ended.

    Args:
        name: the threads' name.
        on_error: called with the exception of a failed job (the tab shows it; the worker goes on).
        after: called after every job, failed or not (to enable a button again, say).
    """

    def __init__(
        self, name: str, on_error: Callable[[Exception], None], after: Callable[[], None] | None = None
    ) -> None:
        self.name = name
        self._on_error = on_error
        self._after = after
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def run(self, job: Callable[[], None]) -> None:
        """Run ``job`` after the jobs given before it."""
        with self._lock:
            previous = self._thread

            def chained() -> None:
                if previous is not None:
                    previous.join()
                try:
                    job()
                except Exception as err:  # noqa: BLE001 - every error is shown; the panel keeps working
                    self._on_error(err)
                finally:
                    if self._after is not None:
                        self._after()

            self._thread = threading.Thread(target=chained, name=self.name, daemon=True)
            self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the jobs given so far; True when they have ended."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True
