"""The pipeline's lock, for threads that would rather hand their work over than wait for it.

Every source has its own receiving thread, and all of them feed one pipeline (sampler, frame
stores, ring) under one lock. Under the GIL, a thread that blocks on that lock while its holder
waits for the GIL starts a convoy of lock and GIL hand-overs between cores: with four busy CAN
buses the receiving threads spent half as much CPU again per frame on them as on the frames
(docs/performance.md). A `HandoverLock` never makes a source wait: work submitted while the
lock is held is queued, and whoever holds the lock runs it, in order, before letting go.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger(__name__)

Work = Callable[[], None]
# Then a submitter waits, as on a plain lock. Each piece holds a batch of frames (up to 64 from
# a busy bus, one or two from a bus at its real rate), so this bounds what the agent holds for
# a busy pipeline: a car's frames wait in the kernel's socket buffer instead, outside our RSS.
MAX_PENDING = 16


class HandoverLock:
    """A lock (`with lock:` waits, as a `threading.Lock` does) that also takes `submit`ted
    work, run under it by whichever thread holds it.

    Work submitted before a `with` block takes the lock runs before the block's body. A
    failing piece of work is logged and does not stop the others or the thread that ran it.
    """

    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self._lock = threading.Lock()
        self._pending: deque[Work] = deque()
        self._max_pending = max_pending

    def submit(self, work: Work) -> None:
        """Run `work` under the lock, now or soon; wait only while `max_pending` pieces are
        queued already (back-pressure on a pipeline that cannot keep up)."""
        self._pending.append(work)
        if len(self._pending) > self._max_pending:
            with self:
                return
        self._hand_over()

    def __enter__(self) -> None:
        self._lock.acquire()
        self._run_pending()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        try:
            self._run_pending()
        finally:
            self._lock.release()
        self._hand_over()

    def _hand_over(self) -> None:
        # Work queued after the holder's last look, by a thread that then found the lock
        # taken, would wait for the next caller: whoever sees it after a release runs it.
        pending, lock = self._pending, self._lock
        while pending and lock.acquire(blocking=False):
            try:
                self._run_pending()
            finally:
                lock.release()

    def _run_pending(self) -> None:
        pending = self._pending
        while pending:
            work = pending.popleft()
            try:
                work()
            except Exception:
                log.exception("pipeline work failed; carrying on with the rest")
