"""The embedded services start on demand, are shared between processes, and stop with their last user."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import BASE_DIR

HOLDER = textwrap.dedent(
    """
    import sys
    from devstack import services
    getattr(services, sys.argv[1])()
    print("held", flush=True)
    sys.stdin.readline()  # hold the service until the test closes our stdin
    """
)


def holder_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "LLAMA_POOL"}}
    env["BIZAGENT_DATA_DIR"] = str(data_dir)
    return env


def start_holder(data_dir: Path, entry: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, entry],
        cwd=BASE_DIR,
        env=holder_env(data_dir),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0


def server_pid(folder: Path) -> int:
    return int((folder / "server.pid").read_text())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def wait_dead(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    # Short path: unix socket paths are limited to ~107 bytes.
    yield tmp_path


def test_redis_is_shared_and_stopped_by_its_last_holder(data_dir: Path) -> None:
    first = start_holder(data_dir, "ensure_redis")
    pid = server_pid(data_dir / "redis")
    second = start_holder(data_dir, "ensure_redis")
    assert server_pid(data_dir / "redis") == pid  # reused, not started twice

    release(first)
    assert alive(pid), "a holder left while another still needs Redis"
    release(second)
    assert wait_dead(pid)
    assert not (data_dir / "redis" / "redis.sock").exists() or not alive(pid)


def test_a_killed_holder_does_not_keep_redis_alive_forever(data_dir: Path) -> None:
    crashed = start_holder(data_dir, "ensure_redis")
    pid = server_pid(data_dir / "redis")
    crashed.send_signal(signal.SIGKILL)
    crashed.wait()
    assert alive(pid)  # nobody stopped it: the holder died without letting go

    # The next user prunes the dead holder; when it leaves, Redis stops.
    survivor = start_holder(data_dir, "ensure_redis")
    assert server_pid(data_dir / "redis") == pid
    release(survivor)
    assert wait_dead(pid)


def test_postgres_with_pgvector_starts_in_its_data_folder_and_stops_after(data_dir: Path) -> None:
    script = textwrap.dedent(
        """
        from devstack import paths, services
        services.ensure_postgres()
        import psycopg
        with psycopg.connect(host=str(paths.postgres_socket_dir()), user="postgres",
                             dbname=paths.DATABASE_NAME) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            print(conn.execute("SELECT '[1,2]'::vector <=> '[2,4]'::vector").fetchone()[0])
            print(open(paths.postgres_dir() / "postmaster.pid").readline().strip())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=BASE_DIR,
        env=holder_env(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    distance, postmaster = result.stdout.split()
    assert float(distance) == pytest.approx(0.0)
    assert wait_dead(int(postmaster)), "the last holder's exit must stop PostgreSQL"


def test_a_killed_postgres_holder_does_not_keep_postgres_alive(data_dir: Path) -> None:
    crashed = start_holder(data_dir, "ensure_postgres")
    postmaster = int((data_dir / "pg" / "postmaster.pid").read_text().splitlines()[0])
    crashed.send_signal(signal.SIGKILL)
    crashed.wait()
    survivor = start_holder(data_dir, "ensure_postgres")
    assert int((data_dir / "pg" / "postmaster.pid").read_text().splitlines()[0]) == postmaster
    release(survivor)
    assert wait_dead(postmaster, 30)


def test_postgres_stops_with_its_last_holder_even_if_another_died_after_it_started(data_dir: Path) -> None:
    survivor = start_holder(data_dir, "ensure_postgres")
    postmaster = int((data_dir / "pg" / "postmaster.pid").read_text().splitlines()[0])
    crashed = start_holder(data_dir, "ensure_postgres")
    crashed.send_signal(signal.SIGKILL)
    crashed.wait()
    release(survivor)
    assert wait_dead(postmaster, 30)


def test_settings_and_the_paths_module_start_nothing_and_write_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**holder_env(data), "DEBUG": "1"}
    subprocess.run(
        [sys.executable, "-c", "import config.settings, devstack.paths"], cwd=BASE_DIR, env=env, check=True
    )
    assert not data.exists()
