"""The dev runner's supervision, against real processes: a killed child comes back after its back-off, the
delays grow while it keeps dying, SIGTERM stops every child (their own children included), and the embedded
Redis started again keeps what was written before it was killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from config.settings import BASE_DIR
from devstack.supervisor import Backoff, Supervisor
from tests.devstack.test_services import alive, holder_env, release, server_pid, start_holder, wait_dead

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, source: str, line: str) -> None:
        self.lines.append(f"{source} | {line}")


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def supervisor(log: Log) -> Iterator[Supervisor]:
    supervisor = Supervisor(log, first_delay=0.1, max_delay=0.4, stable_after=5.0, interval=0.02)
    yield supervisor
    supervisor.stop(grace=5)


def check_until(supervisor: Supervisor, done: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "not done in time"
        supervisor.check()
        time.sleep(supervisor.interval)


def test_the_backoff_doubles_up_to_its_ceiling_and_starts_over_after_a_stable_run() -> None:
    backoff = Backoff(first=1.0, ceiling=30.0, stable_after=60.0)
    assert [backoff.next_delay(uptime=2.0) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.next_delay(uptime=60.0) == 1  # it had stayed up: the crash counts as the first
    assert backoff.next_delay(uptime=0.5) == 2


def test_a_child_killed_with_sigkill_is_started_again(supervisor: Supervisor, log: Log) -> None:
    child = supervisor.spawn("sleeper", SLEEPER)
    first = child.pid
    os.kill(first, signal.SIGKILL)

    check_until(supervisor, lambda: "stack | sleeper restarted" in log.lines)
    assert "stack | sleeper exited with code -9; restarting it in 0.1 s" in log.lines
    assert child.pid != first
    assert alive(child.pid)
    assert not alive(first)


def test_a_child_that_keeps_dying_waits_longer_each_time(supervisor: Supervisor, log: Log) -> None:
    supervisor.spawn("crasher", [sys.executable, "-c", "raise SystemExit(3)"])

    check_until(supervisor, lambda: sum("restarting it in" in line for line in log.lines) >= 5, seconds=20)
    delays = [line.rsplit(" in ", 1)[1] for line in log.lines if "restarting it in" in line]
    assert delays[:5] == ["0.1 s", "0.2 s", "0.4 s", "0.4 s", "0.4 s"]
    assert all("crasher exited with code 3;" in line for line in log.lines if "restarting it in" in line)


def test_a_child_that_stops_on_its_own_stays_stopped_only_until_its_delay(
    supervisor: Supervisor, log: Log
) -> None:
    # Exit code 0 is a death like any other for a server that should run for ever.
    child = supervisor.spawn("quitter", [sys.executable, "-c", "pass"])
    first = child.pid
    check_until(supervisor, lambda: child.pid != first)
    assert "stack | quitter exited with code 0; restarting it in 0.1 s" in log.lines


def test_a_prefork_style_child_killed_with_sigkill_leaves_no_pool_behind(
    supervisor: Supervisor, log: Log
) -> None:
    # Like a prefork Celery worker: the leader's own children outlive a SIGKILL of the leader.
    leader = textwrap.dedent(
        """
        import subprocess, sys, time
        pool = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print(pool.pid, flush=True)
        time.sleep(60)
        """
    )
    child = supervisor.spawn("worker", [sys.executable, "-c", leader])
    check_until(supervisor, lambda: any(line.startswith("worker | ") for line in log.lines))
    pool_pid = int(next(line for line in log.lines if line.startswith("worker | ")).split("| ")[1])
    os.kill(child.pid, signal.SIGKILL)

    check_until(supervisor, lambda: "stack | worker restarted" in log.lines)
    assert wait_dead(pool_pid, 5), "the dead leader's pool process was left running"


RUNNER = textwrap.dedent(
    """
    import sys
    from devstack.supervisor import Supervisor, interrupt_on_stop_signals

    supervisor = Supervisor(lambda source, line: print(f"{source} | {line}", flush=True))
    interrupt_on_stop_signals()
    try:
        # A child with a child of its own: stopping the group stops both.
        supervisor.spawn("parent", [sys.executable, "-c",
            "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
            " time.sleep(60)"])
        supervisor.spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
        print("pids", *(child.pid for child in supervisor.children), flush=True)
        supervisor.run()
    except KeyboardInterrupt:
        pass
    finally:
        supervisor.stop()
    print("stopped", flush=True)
    """
)


def test_sigterm_to_the_runner_stops_every_child_and_theirs() -> None:
    runner = subprocess.Popen([sys.executable, "-c", RUNNER], cwd=BASE_DIR, stdout=subprocess.PIPE, text=True)
    try:
        assert runner.stdout is not None
        line = runner.stdout.readline().split()
        assert line[0] == "pids", line
        children = [int(pid) for pid in line[1:]]
        deadline = time.monotonic() + 10
        while len(psutil.Process(children[0]).children()) < 1:
            assert time.monotonic() < deadline, "the parent child did not start its own"
            time.sleep(0.05)
        ours = [child.pid for child in psutil.Process(runner.pid).children(recursive=True)]
        assert len(ours) == 3

        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=20) == 0
        assert runner.stdout.read().strip().endswith("stopped")
        assert [pid for pid in ours if not wait_dead(pid, 5)] == []
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()


SUPERVISED = textwrap.dedent(
    """
    import sys, threading
    from devstack import services
    from devstack.supervisor import Supervisor

    getattr(services, sys.argv[1])()
    supervisor = Supervisor(lambda source, line: print(f"{source} | {line}", flush=True), first_delay=0.1)
    for service in services.supervised():
        supervisor.watch(service)
    print("held", flush=True)
    released = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), released.set()), daemon=True).start()
    while not released.wait(0.05):
        supervisor.check()
    """
)


def test_the_embedded_redis_killed_comes_back_with_its_data(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", SUPERVISED, "ensure_redis"],
        cwd=BASE_DIR,
        env=holder_env(tmp_path),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    socket = str(tmp_path / "redis" / "redis.sock")
    client = redis.Redis(unix_socket_path=socket, db=3)
    try:
        client.set("survives", "a crash")  # answered: the server has written it to its append-only file
        first = server_pid(tmp_path / "redis")
        os.kill(first, signal.SIGKILL)

        assert holder.stdout.readline().strip() == "stack | redis exited with code -9; restarting it in 0.1 s"
        assert holder.stdout.readline().strip() == "stack | redis restarted"
        assert server_pid(tmp_path / "redis") != first
        assert client.get("survives") == b"a crash"
    finally:
        client.close()
        release(holder)
    assert wait_dead(server_pid(tmp_path / "redis"))


def test_the_embedded_redis_restarts_even_when_another_holder_started_it(tmp_path: Path) -> None:
    other = start_holder(tmp_path, "ensure_redis")  # starts the server: it is not the supervisor's child
    holder = subprocess.Popen(
        [sys.executable, "-c", SUPERVISED, "ensure_redis"],
        cwd=BASE_DIR,
        env=holder_env(tmp_path),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        first = server_pid(tmp_path / "redis")
        os.kill(first, signal.SIGKILL)
        assert holder.stdout.readline().strip() == "stack | redis is not running; restarting it in 0.1 s"
        assert holder.stdout.readline().strip() == "stack | redis restarted"
        assert alive(server_pid(tmp_path / "redis"))
    finally:
        release(holder)
        release(other)
    assert wait_dead(server_pid(tmp_path / "redis"))


def test_the_embedded_postgres_killed_comes_back_with_its_data(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", SUPERVISED, "ensure_postgres"],
        cwd=BASE_DIR,
        env=holder_env(tmp_path),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []

    def postgres(sql: str) -> list[tuple[object, ...]]:
        with psycopg.connect(
            host=str(tmp_path / "pg"), user="postgres", dbname="bizagent", autocommit=True
        ) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def postmaster() -> int:
        return int((tmp_path / "pg" / "postmaster.pid").read_text().splitlines()[0])

    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        postgres("CREATE TABLE kept AS SELECT 'a crash' AS value")
        first = postmaster()
        os.kill(first, signal.SIGKILL)

        # Its backends and a not yet reaped postmaster may hold it back: a try or two may fail first.
        while (line := holder.stdout.readline().strip()) != "stack | postgresql restarted":
            assert line, "\n".join(lines)
            lines.append(line)
        assert lines[0] == "stack | postgresql is not running; restarting it in 0.1 s"
        second = postmaster()
        assert second != first
        assert postgres("SELECT value FROM kept") == [("a crash",)]
    finally:
        release(holder)
    assert wait_dead(second, 30), "the last holder's exit must stop the restarted PostgreSQL"
