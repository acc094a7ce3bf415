"""Handles: a server process shared by every process of the project on this machine.

A process that needs a service takes a *handle* on it (its pid in the service folder's ``handles.json``,
under an inter-process file lock), starts it if nobody has, and the last handle to go stops it. A process
that died without letting go is pruned the next time anyone takes or drops a handle. ``ProcessService`` is
that mechanism; each embedded server says how it is started and how it is seen running
(``devstack.redis_server``, ``devstack.llama``).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from devstack import paths
from devstack.supervisor import stop_deferred

logger = logging.getLogger(__name__)


class EmbeddedServiceError(RuntimeError):
    """An embedded service could not be started; the message says which and why."""


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
class ProcessService:
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


def wait_until(ready: object, seconds: float, what: str, log: Path) -> None:
    """Wait for ``ready()`` to say a server just launched is up; else raise with the tail of its log."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(ready) and ready():
            return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise EmbeddedServiceError(f"{what} did not become ready within {seconds:.0f}s. Log tail:\n{tail}")


def free_port() -> int:
    """A loopback port free now, for a server to bind (the llama.cpp server, the tests' stand-in servers)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
