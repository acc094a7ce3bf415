"""The dev runner's supervision: every process of the stack that dies is started again, after a back-off.

A crashed process (a Celery worker, the ASGI server, an embedded server) is restarted after 1 s, then 2, 4...
up to 30 s while it keeps dying; once it has stayed up for a minute, its next crash starts again from 1 s.
The stack never goes down because one process did: only SIGINT or SIGTERM stop it, and they stop every
child (``Supervisor.stop``), each in its own process group, so nothing is left behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import IO, NoReturn, Protocol

Say = Callable[[str, str], None]


class Supervised(Protocol):
    """Something the supervisor keeps running."""

    name: str

    def gone(self) -> str | None:
        """None while it runs; once it has died, how (for the log: "exited with code -9")."""

    def start(self) -> None:
        """Start it again (raises when it cannot: the supervisor tries again after the next delay)."""


# --- Stop signals ---------------------------------------------------------------------------------------

_deferring = 0
_deferred = False


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    global _deferred
    if _deferring:
        _deferred = True
        return
    raise KeyboardInterrupt


def interrupt_on_stop_signals() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread, so that whatever runs (a service
    starting, migrations, the watch loop) unwinds into the caller's cleanup."""
    signal.signal(signal.SIGINT, _on_stop_signal)
    signal.signal(signal.SIGTERM, _on_stop_signal)


@contextlib.contextmanager
def stop_deferred() -> Iterator[None]:
    """Hold a stop signal until the block ends: a process started in it is recorded before the interrupt
    unwinds (otherwise Ctrl-C landing between fork and bookkeeping leaves a process nobody stops).
    Outside the dev runner (default handlers) it changes nothing."""
    global _deferring, _deferred
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if _deferred and not _deferring:
        _deferred = False
        raise KeyboardInterrupt


# --- Child processes ------------------------------------------------------------------------------------


class ChildProcess:
    """A command run in its own session (Ctrl-C in the terminal reaches the runner only, which stops the
    children in order), its output streamed line by line with its name as prefix."""

    def __init__(self, name: str, args: list[str], say: Say, env: dict[str, str] | None = None) -> None:
        self.name, self.args, self.say = name, args, say
        self.env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
        self.proc: subprocess.Popen[bytes] | None = None
        self._leftovers_killed = False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with stop_deferred():
            self.proc = subprocess.Popen(
                self.args,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
            self._leftovers_killed = False
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()

    def gone(self) -> str | None:
        if self.proc is None or self.proc.poll() is None:
            return None
        if not self._leftovers_killed:
            # A leader killed with SIGKILL leaves its group behind (a prefork worker's pool processes):
            # kill it now, while the group id cannot have been reused, before a new leader starts.
            self._leftovers_killed = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        return f"exited with code {self.proc.returncode}"

    def _pump(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self.say(self.name, raw.decode(errors="replace").rstrip())


# --- The supervisor -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Backoff:
    """Delays before restarts: ``first`` doubling up to ``ceiling``, back to ``first`` after a process has
    stayed up ``stable_after`` seconds."""

    first: float = 1.0
    ceiling: float = 30.0
    stable_after: float = 60.0
    failures: int = 0

    def next_delay(self, uptime: float) -> float:
        if uptime >= self.stable_after:
            self.failures = 0
        delay = min(self.ceiling, self.first * 2.0**self.failures)
        self.failures += 1
        return delay


@dataclasses.dataclass
class _Watch:
    supervised: Supervised
    backoff: Backoff
    started_at: float
    restart_at: float | None = None


class Supervisor:
    """Restarts whatever it watches when it dies; ``stop`` ends its child processes."""

    def __init__(
        self,
        say: Say,
        *,
        source: str = "stack",
        first_delay: float = 1.0,
        max_delay: float = 30.0,
        stable_after: float = 60.0,
        interval: float = 0.5,
    ) -> None:
        self._say, self.source, self.interval = say, source, interval
        self._backoff = Backoff(first_delay, max_delay, stable_after)
        self.children: list[ChildProcess] = []
        self._watches: list[_Watch] = []

    def say(self, line: str) -> None:
        self._say(self.source, line)

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> ChildProcess:
        child = ChildProcess(name, args, self._say, env)
        # Recorded before it starts: stop() reaches it even if a signal lands as it starts.
        self.children.append(child)
        child.start()
        self.watch(child)
        return child

    def watch(self, supervised: Supervised) -> None:
        """Watch something already running."""
        self._watches.append(_Watch(supervised, dataclasses.replace(self._backoff), time.monotonic()))

    def check(self) -> None:
        """One round: note what died and schedule its restart; restart what is due."""
        for watch in self._watches:
            name = watch.supervised.name
            now = time.monotonic()
            if watch.restart_at is None:
                how = watch.supervised.gone()
                if how is None:
                    continue
                delay = watch.backoff.next_delay(now - watch.started_at)
                watch.restart_at = now + delay
                self.say(f"{name} {how}; restarting it in {delay:g} s")
            elif now >= watch.restart_at:
                try:
                    watch.supervised.start()
                except Exception as exc:
                    delay = watch.backoff.next_delay(0.0)
                    watch.restart_at = time.monotonic() + delay
                    self.say(f"{name} did not start again ({exc}); next try in {delay:g} s")
                    continue
                watch.restart_at = None
                watch.started_at = time.monotonic()
                self.say(f"{name} restarted")

    def run(self) -> NoReturn:
        """Check every ``interval`` until a stop signal (KeyboardInterrupt) ends it."""
        while True:
            self.check()
            time.sleep(self.interval)

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM to every child's process group; SIGKILL to those still running after ``grace`` seconds."""
        running = [child for child in self.children if child.proc is not None and child.proc.poll() is None]
        for child in self.children:
            if child not in running:
                child.gone()  # what a crashed leader left behind, if the last check has not seen it yet
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in running:
            assert child.proc is not None
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{child.name} did not stop in time: killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.proc.wait()
