"""Where instances run. The scheduler hands an executor *batches* of instances.

The interface is one method, ``submit(fn, batch, done)``: run ``fn(batch)`` somewhere and
call ``done(result)`` (from any thread) when it returns. The scheduler batches tiny instances
itself, so an executor pays its own per-task cost once per batch, not once per instance.

``SyncExecutor`` runs each batch inline: deterministic, for tests and debugging.
``ThreadExecutor`` is the default: a fixed set of worker threads pulling from one queue (no
thread per instance, no ``Future`` per instance). A worker stuck past an instance's timeout
is written off and replaced, so the pool keeps its size; the stuck thread retires when its
call finally returns.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol


def default_workers() -> int:
    """Like ``ThreadPoolExecutor``'s default: min(32, CPUs + 4)."""
    return min(32, (os.cpu_count() or 1) + 4)


class Executor(Protocol):
    #: How many batches can run at once; the scheduler sizes batches from it.
    workers: int

    def submit(self, fn: Callable[[Any], Any], batch: Any, done: Callable[[Any], None]) -> None: ...

    def replace_stuck_worker(self) -> None:
        """A worker is stuck in a timed-out call: keep the pool's capacity."""

    def close(self, *, wait: bool = True) -> None: ...


class SyncExecutor:
    """Runs every batch in the calling thread, one at a time."""

    workers = 1

    def submit(self, fn: Callable[[Any], Any], batch: Any, done: Callable[[Any], None]) -> None:
        done(fn(batch))

    def replace_stuck_worker(self) -> None:
        pass

    def close(self, *, wait: bool = True) -> None:
        pass


_STOP = object()


def _ready() -> None:
    """A no-op task: returns once a worker process is up."""


class ThreadExecutor:
    """A pool of daemon worker threads fed from one queue."""

    def __init__(self, max_workers: int | None = None):
        self.workers = max_workers or default_workers()
        if self.workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._tasks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._retire = 0
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._replaced = False

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"mage_nb-worker-{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        get = self._tasks.get
        while True:
            task = get()
            if task is _STOP:
                return
            fn, batch, done = task
            done(fn(batch))
            if self._retire:
                with self._lock:
                    if self._retire:
                        self._retire -= 1
                        return

    def submit(self, fn: Callable[[Any], Any], batch: Any, done: Callable[[Any], None]) -> None:
        if self._closed:
            raise RuntimeError("executor is closed")
        if len(self._threads) < self.workers:
            # Start threads as work arrives, so a run of three blocks starts three threads.
            self._start_thread()
        self._tasks.put((fn, batch, done))

    def replace_stuck_worker(self) -> None:
        with self._lock:
            self._retire += 1
            self._replaced = True
        self._start_thread()

    def close(self, *, wait: bool = True) -> None:
        """Stop the workers once they are idle; ``wait`` joins those that are not stuck."""
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._tasks.put(_STOP)
        if wait and not self._replaced:
            for thread in self._threads:
                thread.join()


class ProcessExecutor:
    """A local process pool for CPU-bound blocks.

    Workers are started once per run (``start``) with the run's ``Program``: the notebook's
    prelude runs once in each. The scheduler sends batches as bytes (``remote.run_tasks``).
    A worker process that dies takes its pool down with it; the pool is then started again
    and the lost batches are sent again (up to ``resubmits`` times), so a killed worker costs
    time, not instances.
    """

    remote = True
    enforces_timeouts = True  # each worker runs instances in its main thread (remote._Alarm)
    target_batch_seconds = 0.05
    max_batch = 4096

    def __init__(self, max_workers: int | None = None, resubmits: int = 3):
        self.workers = max_workers or os.cpu_count() or 1
        self.resubmits = resubmits
        self._pool: Any = None
        self._program: bytes | None = None
        self._lock = threading.Lock()
        self._stuck = False

    def start(self, program: bytes) -> None:
        """Start every worker (each runs the prelude) before the run's clock starts, so
        start-up time never counts against an instance's --timeout."""
        self._program = program
        self._new_pool()
        for future in [self._pool.submit(_ready) for _ in range(self.workers)]:
            future.result()

    def _new_pool(self) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from . import remote

        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["mage_nb.engine.remote"])
        start: Any = remote.start_worker  # typeshed expects an initializer of no arguments
        self._pool = ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=start, initargs=(self._program,)
        )

    def submit(self, fn: Callable[[Any], Any], batch: Any, done: Callable[[Any], None]) -> None:
        self._submit(fn, batch, done, self.resubmits)

    def _submit(
        self, fn: Callable[[Any], Any], batch: Any, done: Callable[[Any], None], left: int
    ) -> None:
        from concurrent.futures.process import BrokenProcessPool

        with self._lock:
            pool = self._pool
        if pool is None:
            done(RuntimeError("the process pool was closed: the run has ended"))
            return
        try:
            future = pool.submit(fn, batch)
        except (BrokenProcessPool, RuntimeError) as exc:
            self._recover(pool, fn, batch, done, left, exc)
            return

        def finished(f: Any) -> None:
            try:
                done(f.result())
            except BrokenProcessPool as exc:
                self._recover(pool, fn, batch, done, left, exc)
            except BaseException as exc:
                done(exc)

        future.add_done_callback(finished)

    def _recover(
        self,
        broken: Any,
        fn: Callable[[Any], Any],
        batch: Any,
        done: Callable[[Any], None],
        left: int,
        exc: BaseException,
    ) -> None:
        if left <= 0 or self._pool is None:  # out of retries, or the run has ended
            done(exc)
            return
        with self._lock:
            if self._pool is broken and self._program is not None:
                broken.shutdown(wait=False, cancel_futures=True)
                self._new_pool()
        self._submit(fn, batch, done, left - 1)

    def replace_stuck_worker(self) -> None:
        """A body outlived even the backstop deadline (stuck where the alarm cannot reach):
        the run will not wait for it at the end."""
        self._stuck = True

    def close(self, *, wait: bool = True) -> None:
        """Stop the workers: let them finish (``wait``), or terminate them (a cancelled run,
        or a worker stuck in an abandoned call).

        Worker processes must not outlive the run: they hold the parent's stdout and stderr.
        """
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is None:
            return
        if not wait or self._stuck:
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor:
    """A Dask distributed cluster: an existing one (``address``) or a local one for the run.

    The run's ``Program`` is started on every worker once (and on any worker that joins
    later, on its first batch); batches are ordinary Dask tasks, so a worker that dies has
    its batches re-run elsewhere by the scheduler. Outputs of ``keep_on_workers`` bytes or
    more stay on the worker that computed them (``handles``); ``None`` brings every output
    back.
    """

    remote = True
    keeps_outputs = True
    # Each Dask task costs scheduler CPU (on a small machine, the same CPUs as the work):
    # fewer, longer batches.
    target_batch_seconds = 0.2
    max_batch = 8192

    def __init__(
        self,
        address: str | None = None,
        max_workers: int | None = None,
        timeout: float = 5,
        keep_on_workers: int | None = 1 << 20,
    ):
        self.address = address
        self.workers = max_workers or os.cpu_count() or 1
        self.timeout = timeout
        self.keep_on_workers = keep_on_workers
        self._client: Any = None
        self._cluster: Any = None
        self._program: bytes | None = None
        self._started_topic: str | None = None

    def connect(self) -> None:
        """Reach the scheduler (or start a local cluster); errors here mean nothing ran."""
        from distributed import Client, LocalCluster

        if self._client is not None:
            return
        if self.address:
            self._client = Client(self.address, timeout=f"{self.timeout}s", set_as_default=False)
        else:
            self._cluster = LocalCluster(
                n_workers=self.workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
            )
            self._client = Client(self._cluster, set_as_default=False)
        self.workers = max(1, len(self._client.scheduler_info().get("workers", {})) or self.workers)

    def start(self, program: bytes) -> None:
        from . import remote

        self.connect()
        self._program = program
        self._client.run(remote.start_worker, program)

    def submit(self, fn: Callable[[Any], Any], batch: Any, done: Callable[[Any], None]) -> None:
        """``batch`` is (payload, futures): the futures are inputs Dask fetches for the task."""
        payload, futures = batch
        future = self._client.submit(
            fn,
            payload,
            self._program,
            self.keep_on_workers,
            self._started_topic,
            *futures,
            pure=False,
        )

        def finished(f: Any) -> None:
            # Dask runs every future's callbacks on one shared thread: never block it. A
            # batch still running when the run ended (an abandoned timed-out call) ends
            # after its client closed, and asking for its result then would wait forever.
            if self._client is None:
                return
            status = f.status
            try:
                if status == "finished":
                    done(f.result(timeout=60))
                elif status == "error":
                    done(f.exception(timeout=60))
                else:
                    done(RuntimeError(f"the Dask task ended as {status!r}"))
            except BaseException as exc:
                done(exc)

        future.add_done_callback(finished)

    def report_starts(self, started: Callable[[str, int], None]) -> None:
        """Call ``started(uuid, attempt)`` when a timed instance starts on a worker (a Dask
        event on a topic of this run's own), so that its --timeout counts from then: time
        queued behind other work on a shared cluster does not count."""
        import uuid

        self._started_topic = f"mage_nb-started-{uuid.uuid4().hex}"
        self._client.subscribe_topic(self._started_topic, lambda event: started(*event[1]))

    def adopt(self, kept: Any) -> Any:
        """A worker kept an output: claim it as a Dask key (``RemoteOutput``) on that worker."""
        from . import remote
        from .handles import RemoteOutput

        future = self._client.submit(
            remote.take,
            kept.token,
            workers=[kept.address],
            allow_other_workers=True,  # a lost worker: fail clearly elsewhere, don't wait
            priority=1,
            pure=False,
        )
        return RemoteOutput(future, kept)

    def gather(self, futures: list[Any]) -> list[Any]:
        return list(self._client.gather(futures))

    def replace_stuck_worker(self) -> None:
        pass

    def close(self, *, wait: bool = True) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            cluster.close()
