"""Where the embedded services live and how to reach them: what settings need for their defaults.

Pure: importing this module or calling its functions starts nothing and writes nothing (settings import it;
``devstack.services`` starts the servers). Every path follows ``BIZAGENT_DATA_DIR`` (default ``.data/``),
read at each call.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DATABASE_NAME = "bizagent"
LLAMA_MODEL_NAME = "smollm2-135m-instruct"
# llama-cpp-python's server generates for one request at a time (one model behind one lock): the pool
# registers the embedded endpoint with this many slots, so that further replies queue in the pool.
LLAMA_SERVER_SLOTS = 1


def data_dir() -> Path:
    return Path(os.environ.get("BIZAGENT_DATA_DIR") or BASE_DIR / ".data").resolve()


def postgres_dir() -> Path:
    return data_dir() / "pg"


def postgres_socket_dir() -> Path:
    """The socket folder from postmaster.pid (pgserver moves it when the data path is too long)."""
    pid_file = postgres_dir() / "postmaster.pid"
    with contextlib.suppress(OSError, IndexError):
        lines = pid_file.read_text().splitlines()
        if lines[4].strip():
            return Path(lines[4].strip())
    return postgres_dir()


def redis_socket() -> Path:
    return data_dir() / "redis" / "redis.sock"


def embedded_redis_url(db: int = 0) -> str:
    return f"unix://{redis_socket()}?db={db}"


def llama_state_file() -> Path:
    return data_dir() / "llama" / "endpoint.json"


def embedded_llama_url() -> str:
    """Base URL of the embedded llama.cpp server, or "" when it is not running."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        state = json.loads(llama_state_file().read_text())
        if pid_alive(int(state["pid"])):
            return str(state["url"])
    return ""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); it is not alive for our purposes.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True
