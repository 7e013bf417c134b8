"""Run independent tasks on local processes or on an existing dask.distributed cluster.

:func:`map_tasks` is the one entry point.  Each item becomes one task ``fn(item)`` (or
``fn(*item)`` with ``unpack=True``); results come back **in input order**, one
:class:`TaskResult` per item holding either the value or the exception the task raised,
so one bad series never loses the results of the others.

Where tasks run
---------------
``scheduler=None`` and ``workers=1``
    In this process, one after the other (no pickling; easiest to debug).
``scheduler=None`` and ``workers=N > 1``
    ``N`` local worker processes (:class:`concurrent.futures.ProcessPoolExecutor`).
``scheduler="tcp://host:8786"`` (any dask scheduler address) or a ``distributed.Client``
    On that dask.distributed cluster.  hu-roi does not start or manage clusters: start one
    with ``dask scheduler`` / ``dask worker`` (or dask-jobqueue, dask-kubernetes ...), make
    sure every worker has hu-roi installed and sees the DICOM files under the same paths,
    and pass the scheduler address.  A client passed in is used and left open; an
    address makes a client that is closed at the end.

Tasks and their arguments must be picklable (module-level functions, dataclasses); on a
cluster they are sent with cloudpickle, so the worker must be able to import hu_roi.

A scheduler address is checked by :func:`check_scheduler_address` before dask is imported
(a malformed one is a one-line error at once, never a minute of retries), and
:func:`connect_scheduler` connects with a bounded wait so a command can fail before it
does any work.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Protocols of dask.distributed addresses a client can connect to from another process
#: (``inproc://`` addresses of a cluster inside this process are accepted too).
SCHEDULER_PROTOCOLS: tuple[str, ...] = ("tcp", "tls", "ws", "wss", "ucx")
#: Seconds :func:`connect_scheduler` waits for the scheduler by default.
CONNECT_TIMEOUT_S = 10.0
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})$")


def check_scheduler_address(address: str) -> str:
    """Check a dask scheduler address without importing dask or connecting.

    Accepted: ``PROTOCOL://HOST:PORT`` with a protocol of :data:`SCHEDULER_PROTOCOLS`, or
    ``HOST:PORT`` (TCP); HOST is a host name, an IPv4 address or an IPv6 address in
    brackets; PORT is 1-65535.

    Parameters
    ----------
    address : str

    Returns
    -------
    str
        The address with its protocol (``tcp://`` added when missing).

    Raises
    ------
    ValueError
        One line saying what is wrong (the address shown cut to about 80 characters).
    """
    from hu_roi.util import show

    raw = address.strip()
    if not raw:
        raise ValueError("the scheduler address is empty; give HOST:PORT or tcp://HOST:PORT")
    what = f"scheduler address {show(address)}"
    proto, sep, rest = raw.partition("://")
    if not sep:
        proto, rest = "tcp", raw
    if proto.lower() == "inproc" and rest.isprintable() and " " not in rest:
        return raw  # a cluster inside this process (API use: LocalCluster(processes=False))
    if proto.lower() not in SCHEDULER_PROTOCOLS:
        raise ValueError(
            f"{what}: unknown protocol {show(proto)}; use "
            f"{', '.join(p + '://' for p in SCHEDULER_PROTOCOLS)} or HOST:PORT"
        )
    if rest.startswith("["):  # [IPv6]:port
        host, close, port = rest[1:].partition("]")
        if not close or not port.startswith(":"):
            raise ValueError(f"{what}: an IPv6 address is written [ADDRESS]:PORT")
        port = port[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{what}: {show(host)} is not an IPv6 address") from None
        host = f"[{host}]"
    else:
        host, colon, port = rest.rpartition(":")
        if not colon:
            raise ValueError(f"{what}: no port; give HOST:PORT (e.g. tcp://10.0.0.5:8786)")
        if not _HOSTNAME_RE.match(host):
            raise ValueError(f"{what}: {show(host)} is not a host name or IP address")
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"{what}: port {show(port)} is not a number in 1-65535")
    return f"{proto.lower()}://{host}:{int(port)}"


def connect_scheduler(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> Any:
    """A ``distributed.Client`` connected to the scheduler at ``address`` (checked first).

    Raises
    ------
    ValueError
        Malformed address (:func:`check_scheduler_address`).
    OSError
        dask.distributed is not installed, or the scheduler does not answer within
        ``timeout_s`` seconds (one line naming the address).
    """
    from hu_roi.util import show

    addr = check_scheduler_address(address)
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - distributed is a dependency
        raise OSError("--scheduler needs dask.distributed (pip install distributed)") from exc
    try:
        return distributed.Client(addr, timeout=timeout_s)
    except (OSError, TimeoutError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise OSError(
            f"cannot reach the dask scheduler at {show(addr)} within {timeout_s:g} s: "
            f"{show(first, 160)}"
        ) from None


@dataclass(frozen=True)
class TaskResult(Generic[T]):
    """Outcome of one task.

    Attributes
    ----------
    index : int
        Position of the item in the input.
    value : object
        What the task returned (``None`` when it failed).
    error : BaseException or None
        What the task raised, or ``None``.
    """

    index: int
    value: T | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """True when the task returned normally."""
        return self.error is None

    def unwrap(self) -> T:
        """The value, or raise the task's exception."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


@dataclass(frozen=True)
class _Star:
    """Picklable ``lambda args: fn(*args)``."""

    fn: Callable[..., Any]

    def __call__(self, args: Iterable[Any]) -> Any:
        return self.fn(*args)


class _Progress:
    """A tqdm bar on stderr when asked for and stderr is a terminal; else nothing."""

    def __init__(self, enabled: bool, total: int, desc: str) -> None:
        self.bar = None
        if enabled and total and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc or None, unit="task", leave=False)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _is_client(obj: object) -> bool:
    return type(obj).__name__ == "Client" and hasattr(obj, "submit") and hasattr(obj, "map")


def map_tasks(
    fn: Callable[..., T],
    items: Iterable[Any],
    *,
    workers: int = 1,
    scheduler: str | object | None = None,
    progress: bool = False,
    desc: str = "",
    unpack: bool = False,
) -> list[TaskResult[T]]:
    """Run ``fn`` on every item; return one :class:`TaskResult` per item, in input order.

    Parameters
    ----------
    fn : callable
        Picklable function (module level) of one item (or of ``*item`` with ``unpack``).
    items : iterable
        Task arguments (picklable).
    workers : int
        Local processes when ``scheduler`` is None (1 = run in this process).  Ignored on
        a cluster, where the cluster's workers decide.
    scheduler : str, distributed.Client or None
        Address of a running dask scheduler (``"tcp://10.0.0.5:8786"``) or a client.
    progress : bool
        Show a tqdm bar on stderr (only if stderr is a terminal).
    desc : str
        Label of the progress bar.
    unpack : bool
        Call ``fn(*item)`` instead of ``fn(item)``.

    Returns
    -------
    list of TaskResult
        ``results[i]`` belongs to ``items[i]``; failed tasks carry their exception.

    Raises
    ------
    ValueError
        ``workers < 1``; a malformed scheduler address (checked before anything runs).
    OSError
        The scheduler cannot be reached (:func:`connect_scheduler`).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1; got {workers}")
    if scheduler is not None and not _is_client(scheduler):
        check_scheduler_address(str(scheduler))
    args = list(items)
    call: Callable[[Any], T] = _Star(fn) if unpack else fn
    if not args:
        return []
    bar = _Progress(progress, len(args), desc)
    try:
        if scheduler is not None:
            return _run_dask(call, args, scheduler, bar)
        if workers == 1 or len(args) == 1:
            return _run_inline(call, args, bar)
        return _run_processes(call, args, min(workers, len(args)), bar)
    finally:
        bar.close()


def _run_inline(call: Callable[[Any], T], args: list[Any], bar: _Progress) -> list[TaskResult[T]]:
    out: list[TaskResult[T]] = []
    for i, a in enumerate(args):
        try:
            out.append(TaskResult(i, call(a)))
        except Exception as exc:  # one failed task must not lose the others
            log.debug("task %d failed: %r", i, exc)
            out.append(TaskResult(i, error=exc))
        bar.update()
    return out


def usable_cpus(at_most: int = 8) -> int:
    """CPUs this process may run on (its affinity mask, else ``os.cpu_count``), capped.

    The default number of local threads or processes for reading and decoding: beyond
    about 8 the file system, not the CPUs, limits them.
    """
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(at_most, n))


def ignore_sigint() -> None:
    """Worker-process initializer: Ctrl-C is for the parent process only.

    A terminal sends SIGINT to the whole process group; a worker interrupted while it
    holds the pool's queue lock can leave the parent waiting forever on shutdown.  The
    parent stops its workers itself (:func:`stop_workers`).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and terminate the worker processes (on Ctrl-C)."""
    pool.shutdown(wait=False, cancel_futures=True)
    terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            proc.terminate()
        except (OSError, AttributeError, ValueError):
            pass


def _run_processes(
    call: Callable[[Any], T], args: list[Any], workers: int, bar: _Progress
) -> list[TaskResult[T]]:
    out: list[TaskResult[T] | None] = [None] * len(args)
    with ProcessPoolExecutor(max_workers=workers, initializer=ignore_sigint) as pool:
        futures = {pool.submit(call, a): i for i, a in enumerate(args)}
        try:
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    out[i] = TaskResult(i, fut.result())
                except Exception as exc:  # includes BrokenProcessPool (a worker died)
                    out[i] = TaskResult(i, error=exc)
                bar.update()
        except BaseException:  # Ctrl-C: do not wait for the running tasks
            stop_workers(pool)
            raise
    return out  # type: ignore[return-value]


def _run_dask(
    call: Callable[[Any], T], args: list[Any], scheduler: str | object, bar: _Progress
) -> list[TaskResult[T]]:
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - distributed is a dependency
        raise RuntimeError(
            "scheduler given but dask.distributed is not installed; "
            "pip install distributed, or run without --scheduler"
        ) from exc
    own = not _is_client(scheduler)
    client: Any = connect_scheduler(str(scheduler)) if own else scheduler
    try:
        futures = client.map(call, args, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        out: list[TaskResult[T] | None] = [None] * len(args)
        try:
            for fut in distributed.as_completed(futures):
                i = index[fut.key]
                if fut.status == "error":
                    out[i] = TaskResult(i, error=fut.exception())
                else:
                    try:
                        out[i] = TaskResult(i, fut.result())
                    except Exception as exc:  # lost worker, cancelled, ...
                        out[i] = TaskResult(i, error=exc)
                bar.update()
        except BaseException:
            client.cancel(futures)
            raise
        return out  # type: ignore[return-value]
    finally:
        if own:
            client.close()
