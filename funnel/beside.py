"""Run one fitting job on the other core while the caller works: a forked child process on Linux.

``Recommender.fit`` trains its ranker (a whole second set of stages, fitted on the history
part) beside the serving fit. On two threads of one process the two fits held each other up
on the GIL (scikit-surprise's SGD and parts of implicit's ALS hold it): ``python main.py
--runsvd True --judge True`` logged "fitted in 10.5s" with threads, 8.3-9.0 s with the
ranker in a forked child and 7.2-7.8 s with the split below. A forked child shares the
parent's data without copying it and sends back only its result. The ranker's fit, the
longer of the two, forks once more to fit its artist embeddings and BiasedSVD meanwhile
(``Stages.fit(split=True)``), so that the three processes keep both cores busy to the end.

A forked child may not start OpenMP threads: GNU OpenMP keeps the parent's thread pool in
its state, and a multi-threaded region in the child waits for threads that do not exist
(seen here with FAISS and implicit). The child therefore runs everything on one thread,
whatever its parent set: every OpenMP runtime and BLAS is limited to one thread, and ALS fits
and folds in on one (:func:`in_forked_child`). Elsewhere (macOS, Windows, inside a daemonic
process) the job runs on a thread.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from logging.handlers import QueueHandler
from typing import Any, TypeVar

from funnel.errors import FunnelError

logger = logging.getLogger("funnel")

T = TypeVar("T")


def can_fork() -> bool:
    """Whether :func:`beside` runs its job in a forked child process here."""
    return (sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
            and not multiprocessing.current_process().daemon)


_IN_CHILD = False


def in_forked_child() -> bool:
    """True inside the child process of :func:`beside`: everything there runs on one thread."""
    return _IN_CHILD


@contextmanager
def beside(job: Callable[[], T], name: str, fork: bool | None = None) -> Iterator[Future]:
    """Start ``job()`` on the other core; yields a future of its result.

    Parameters
    ----------
    job : callable
        Takes no argument; what it returns must pickle when it runs in a child process.
    name : str
        What the job does, for messages ("the ranker's training").
    fork : bool, optional
        Run it in a forked child process (default: where :func:`can_fork`) or on a thread.
        When the system refuses to fork (out of memory), it runs on a thread, with a warning.

    On leaving the block, a job still running is stopped (a child process is killed; a
    thread is waited for), so an error in the caller's own work does not leave it behind.
    """
    child = None
    if can_fork() if fork is None else fork:
        try:
            child = _Child(job, name)
        except OSError as exc:
            logger.warning("could not start a process for %s (%s); running it on a thread", name, exc)
    if child is None:
        with ThreadPoolExecutor(1, thread_name_prefix="funnel") as pool:
            yield pool.submit(job)
        return
    try:
        yield child.future
    finally:
        child.stop()


@contextmanager
def now(job: Callable[[], T]) -> Iterator[Future]:
    """Run ``job()`` here and now and yield its done future: :func:`beside`'s serial twin."""
    future: Future = Future()
    future.set_result(job())
    yield future


class _PipeQueue:
    """Where the child's :class:`QueueHandler` puts log records: up the pipe to the parent."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def put_nowait(self, record: logging.LogRecord) -> None:
        self.connection.send(("log", record))


def _one_thread_everywhere() -> None:
    """No OpenMP or BLAS threads in this (forked) process, and tqdm's thread lock made anew."""
    global _IN_CHILD
    _IN_CHILD = True  # funnel.factors.als fits and folds in on one thread
    import faiss  # noqa: F401 - loads FAISS's own OpenMP runtime, so that the limit below reaches it
    from threadpoolctl import threadpool_limits
    from tqdm import tqdm
    from tqdm.std import TqdmDefaultWriteLock, TRLock

    threadpool_limits(1)  # every OpenMP runtime (implicit's, FAISS's) and BLAS, for this thread
    TqdmDefaultWriteLock.th_lock = TRLock()  # another thread of the parent may have held it
    tqdm.set_lock(TqdmDefaultWriteLock())


def _run_in_child(job: Callable[[], Any], connection: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops the child
    funnel_logger = logging.getLogger("funnel")  # its records go to the parent's handlers
    funnel_logger.handlers = [QueueHandler(_PipeQueue(connection))]
    funnel_logger.propagate = False
    try:
        _one_thread_everywhere()
        message = ("result", job())
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
        message = ("error", exc, traceback.format_exc())
    try:
        connection.send(message)
    except Exception:  # noqa: BLE001 - a result or exception that does not pickle
        connection.send(("error", None, traceback.format_exc()))
    connection.close()


class _Child:
    """A forked child process running one job; its log records and result come back on a pipe."""

    def __init__(self, job: Callable[[], Any], name: str) -> None:
        self.name = name
        self.future: Future = Future()
        context = multiprocessing.get_context("fork")
        receiving, sending = context.Pipe(duplex=False)
        try:
            with warnings.catch_warnings():  # Python 3.12+ warns on any fork of a threaded process
                warnings.filterwarnings("ignore", message=r".*use of fork\(\) may lead to deadlocks",
                                        category=DeprecationWarning)
                # not a daemon, so that it may fork a child of its own (Stages.fit(split=True));
                # stop() ends it whatever happens to the caller
                self.process = context.Process(target=_run_in_child, args=(job, sending),
                                               name=f"funnel: {name}")
                self.process.start()
        except BaseException:
            receiving.close()
            raise
        finally:
            sending.close()
        self.relay = threading.Thread(target=self._relay, args=(receiving,), daemon=True,
                                      name="funnel-relay")
        try:
            self.relay.start()
        except BaseException:
            self.process.kill()
            self.process.join()
            raise

    def _relay(self, connection: Any) -> None:
        """Pass the child's log records on until its answer comes; resolve the future with it."""
        try:
            while True:
                message = connection.recv()
                if message[0] == "log":
                    record = message[1]
                    logging.getLogger(record.name).handle(record)
                elif message[0] == "result":
                    self.future.set_result(message[1])
                    return
                else:
                    self.future.set_exception(self._error(*message[1:]))
                    return
        except (EOFError, OSError):
            self.process.join()
            self.future.set_exception(FunnelError(
                f"{self.name} ended in its child process without an answer (exit code "
                f"{self.process.exitcode}; a negative code is the signal that stopped it, e.g. -9 when "
                "the system ran out of memory); set n_threads=1 to fit in this process instead"))
        except BaseException as exc:  # noqa: BLE001 - e.g. an answer that does not unpickle here
            self.process.kill()  # it could otherwise block on a full pipe
            self.future.set_exception(FunnelError(
                f"the answer of {self.name} from its child process could not be read: "
                f"{type(exc).__name__}: {exc}"))
        finally:
            connection.close()

    def _error(self, exc: BaseException | None, trace: str) -> BaseException:
        if exc is None:
            return FunnelError(f"{self.name} failed in its child process:\n{trace}")
        if hasattr(exc, "add_note"):
            exc.add_note(f"raised in the child process of {self.name}:\n{trace}")
        return exc

    def stop(self) -> None:
        """Kill the child if it is still working, and wait for it and the relay."""
        if not self.future.done():
            self.process.kill()  # SIGKILL: no handler it inherited can ignore it
        self.process.join()
        self.relay.join()
