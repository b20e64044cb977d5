import logging
import threading

from agent.runtime.handover import HandoverLock


def test_work_runs_at_once_when_the_lock_is_free():
    lock, done = HandoverLock(), []
    lock.submit(lambda: done.append(1))
    assert done == [1]


def test_work_submitted_while_the_lock_is_held_runs_before_it_is_let_go():
    lock, done = HandoverLock(), []
    with lock:
        submitter = threading.Thread(target=lock.submit, args=(lambda: done.append("work"),))
        submitter.start()
        submitter.join(timeout=5)
        assert not submitter.is_alive()  # handed over, did not wait
        assert done == []
        done.append("body")
    assert done == ["body", "work"]


def test_a_full_queue_makes_the_submitter_wait_then_runs_everything_in_order():
    lock, done = HandoverLock(max_pending=3), []

    def submit_five() -> None:
        for n in range(5):
            lock.submit(lambda n=n: done.append(n))

    with lock:
        submitter = threading.Thread(target=submit_five)
        submitter.start()
        submitter.join(timeout=0.5)
        assert submitter.is_alive()  # its fourth piece found three queued: it waits
        assert done == []
    submitter.join(timeout=5)
    assert not submitter.is_alive()
    assert done == [0, 1, 2, 3, 4]


def test_failing_work_is_logged_and_the_rest_still_runs(caplog):
    lock, done = HandoverLock(), []
    with caplog.at_level(logging.ERROR), lock:
        for work in (lambda: done.append(1), lambda: 1 / 0, lambda: done.append(2)):
            threading.Thread(target=lock.submit, args=(work,)).start()
        while len(lock._pending) < 3:
            threading.Event().wait(0.001)
    assert sorted(done) == [1, 2]
    assert "ZeroDivisionError" in caplog.text


def test_many_threads_every_piece_runs_once_under_the_lock_and_in_each_threads_order():
    """Four submitting threads and one that keeps taking the lock itself: nothing is left
    behind in the queue, nothing runs twice or outside the lock, and each thread's pieces run
    in the order it submitted them."""
    lock = HandoverLock()
    ran: list[tuple[int, int]] = []
    inside = [0]
    overlaps = []

    def piece(thread: int, n: int) -> None:
        inside[0] += 1
        if inside[0] != 1:
            overlaps.append((thread, n))
        ran.append((thread, n))
        inside[0] -= 1

    def submitter(thread: int) -> None:
        for n in range(3000):
            lock.submit(lambda n=n: piece(thread, n))

    stop = threading.Event()

    def taker() -> None:
        while not stop.is_set():
            with lock:
                piece(-1, 0)

    threads = [threading.Thread(target=submitter, args=(t,)) for t in range(4)]
    other = threading.Thread(target=taker)
    other.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    other.join()
    assert not lock._pending and not overlaps
    for t in range(4):
        assert [n for thread, n in ran if thread == t] == list(range(3000))
