"""The Dask executor and the check of a scheduler address before anything is created.

:class:`DaskExecutor`: ``"local"`` starts a real ``dask.distributed.LocalCluster``;
``"tcp://HOST:PORT"`` connects to a running scheduler, first checked by
:func:`check_scheduler`. A task whose Dask worker or connection is lost is left unstored
(``lost``: the next run of the same command runs it); Dask's own ``KilledWorker`` (the task
killed several workers) is stored as ``failed`` (docs/reliability.md).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from mirrorflow._core.limits import Limits, current_limits
from mirrorflow._core.validation import MirrorflowError
from mirrorflow.sweep.task import (
    LOST,
    Keep,
    Outcome,
    Task,
    _one_line,
    _outcomes,
    _task_args,
    execute_task,
)

__all__ = ["DASK_CONNECT_TIMEOUT_S", "DASK_HANDSHAKE_TIMEOUT_S", "DaskExecutor", "check_scheduler"]


#: Dask scheduler address schemes mirrorflow accepts.
_DASK_SCHEMES = ("tcp", "tls")
#: Seconds to open a TCP connection to a Dask scheduler, and then (separately) for Dask's
#: handshake and its answer to ``identity`` (docs/reliability.md).
DASK_CONNECT_TIMEOUT_S = 5.0
DASK_HANDSHAKE_TIMEOUT_S = 3.0


def check_scheduler(address: str, connect_timeout: float = DASK_CONNECT_TIMEOUT_S,
                    handshake_timeout: float = DASK_HANDSHAKE_TIMEOUT_S) -> None:
    """One-line :class:`MirrorflowError` unless a Dask scheduler answers at ``address``.

    First a plain TCP connection (``connect_timeout`` s: nothing listening, a host that does
    not answer); then Dask's handshake and an ``identity`` request, under ``handshake_timeout``
    s, whose answer must be a scheduler's. A port that speaks HTTP (the dashboard, by mistake)
    never answers the handshake; a server of another protocol sends bytes that Dask reads as
    absurd frame sizes (a ``MemoryError`` of exabytes) or closes the connection: each is a
    one-line error before anything is created.
    """
    import asyncio

    from distributed.comm import connect
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.security import Security

    hint = "start one with `dask scheduler` or use --dask local"
    host, port = parse_host_port(parse_address(address)[1])
    try:
        socket.create_connection((host, port), timeout=connect_timeout).close()
    except OSError as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise MirrorflowError(f"cannot reach Dask scheduler at {address} ({text}); {hint}"
                              ) from None

    async def probe():
        args = Security().get_connection_args("client")
        comm = await connect(address, timeout=handshake_timeout, **args)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    def in_own_loop():  # a thread of its own: the caller may be inside an event loop
        box: dict[str, Any] = {}

        def target():
            try:
                box["answer"] = asyncio.run(asyncio.wait_for(probe(), handshake_timeout))
            except BaseException as exc:  # handed to the caller's thread below
                box["error"] = exc

        t = threading.Thread(target=target, name="mirrorflow-dask-probe", daemon=True)
        t.start()
        t.join()
        if "error" in box:
            raise box["error"]
        return box["answer"]

    try:
        answer = in_own_loop()
    except (asyncio.TimeoutError, TimeoutError):
        raise MirrorflowError(
            f"no Dask scheduler at {address}: the server accepted the connection but did not "
            f"answer Dask's handshake within {handshake_timeout:g} s (an HTTP port such as the "
            f"dashboard's?); pass the scheduler's address (port 8786 by default)") from None
    except MemoryError:
        raise MirrorflowError(
            f"no Dask scheduler at {address}: the server speaks another protocol (its first "
            f"bytes do not read as Dask frames); pass the scheduler's address") from None
    except Exception as exc:  # closed mid-handshake, nonsense frames, a TLS mismatch, ...
        raise MirrorflowError(
            f"no Dask scheduler at {address}: the server does not speak Dask's protocol "
            f"({_one_line(exc)[:200]}); pass the scheduler's address") from None
    if not (isinstance(answer, dict) and answer.get("type") == "Scheduler"):
        what = answer.get("type") if isinstance(answer, dict) else type(answer).__name__
        raise MirrorflowError(f"no Dask scheduler at {address}: it answered as {what!r}; "
                              f"pass the scheduler's address")


@dataclass(frozen=True)
class DaskExecutor:
    """Run tasks on Dask: ``address="local"`` starts a LocalCluster, else connect to a scheduler."""

    address: str = "local"
    n_workers: int = 0  # LocalCluster size; 0: one per core
    processes: bool = True  # LocalCluster workers as processes (False: threads in this process)

    def __post_init__(self):
        ok = re.fullmatch(r"([a-z]+)://[^\s/:]+:\d+/?", self.address)
        if self.address != "local" and not (ok and ok.group(1) in _DASK_SCHEMES):
            raise MirrorflowError(f"--dask must be 'local' or a scheduler address like "
                                  f"tcp://HOST:PORT, got {self.address!r}")

    @contextmanager
    def session(self, n_tasks: int, limits: Limits | None = None) -> Iterator[Callable]:
        try:
            from dask.distributed import Client, LocalCluster, as_completed
        except ImportError:  # pragma: no cover - optional dependency
            raise MirrorflowError("Dask is not installed; pip install 'mirrorflow[distributed]'"
                                  ) from None
        limits = limits or current_limits()
        cluster = None
        if self.address == "local":
            n = max(1, min(self.n_workers or os.cpu_count() or 1, n_tasks))
            where = {"host": "127.0.0.1"} if self.processes else {}  # threads: inproc://
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=self.processes,
                                   dashboard_address=None, **where)
            client = Client(cluster)
        else:
            check_scheduler(self.address)
            try:
                client = Client(self.address, timeout="10s")
            except (OSError, ValueError, TypeError) as exc:
                raise MirrorflowError(f"cannot reach Dask scheduler at {self.address} "
                                      f"({' '.join(str(exc).split())}); start one with "
                                      f"`dask scheduler` or use --dask local") from None
        threads = 1 if (self.processes or cluster is None) else None

        def imap(tasks: Iterable[Task], keep: Keep | None = None):
            tasks = [t for t in ((keep(t) if keep else t) for t in tasks) if t]
            futs = {client.submit(execute_task, *_task_args(t), threads, limits, pure=False): t
                    for t in tasks}
            for fut in as_completed(list(futs)):
                yield futs[fut], _dask_outcomes(fut, futs[fut])

        # a lost scheduler is reported once, as runs "not run"; not as the client's tracebacks
        quiet = logging.getLogger("distributed.client")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)
        try:
            yield imap
        finally:
            try:
                client.close()
                if cluster is not None:
                    cluster.close()
            finally:
                quiet.setLevel(level)


def _dask_outcomes(fut: Any, task: Task) -> list[Outcome]:
    """The outcomes of a finished Dask future. The task itself never raises (execute_task
    catches); an exception here is the infrastructure's: a task that killed its workers
    (``KilledWorker``) is ``failed``, anything else (a lost connection, a cancelled future)
    leaves its runs unstored."""
    try:
        return fut.result()
    except Exception as exc:
        if type(exc).__name__ == "KilledWorker":
            return _outcomes(task, "failed", (f"it killed its Dask worker each time it ran "
                                              f"({_one_line(exc)}); --retry-failed runs it again"))
        text = _one_line(exc)
        return _outcomes(task, LOST, text if len(text) <= 200 else text[:199] + "…")
