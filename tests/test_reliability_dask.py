"""`--dask` pointed at something that is not a Dask scheduler (issue 24, items 3 and 4): an
HTTP port (the dashboard's, by mistake), a server of another protocol, a silent one. Each is
one line, exit 2, within seconds, and no store is created. Real servers on 127.0.0.1 (loopback
only), real CLI processes."""

from __future__ import annotations

import http.server
import random
import socket
import threading
import time

import pytest

from mirrorflow.sweep.execute import DASK_CONNECT_TIMEOUT_S, DASK_HANDSHAKE_TIMEOUT_S
from reliability_helpers import cli, cli_here, one_error_line, write_spec


class _Server:
    """A TCP server on 127.0.0.1 that answers every connection with ``reply(conn)``."""

    def __init__(self, reply):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.reply = reply
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            try:
                self.reply(conn)
            except OSError:
                pass

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def _ssh(conn):
    conn.sendall(b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n")


def _random(conn):
    conn.sendall(random.Random(0).randbytes(4096))


def _close(conn):
    conn.close()


def _silent(conn):
    pass  # accepts, never says anything (keeps the connection open)


def _redis(conn):
    conn.sendall(b"-ERR unknown command\r\n" * 4)


OTHER_PROTOCOLS = {"ssh banner": _ssh, "random bytes": _random, "closes at once": _close,
                   "silent": _silent, "redis-like error lines": _redis}


@pytest.fixture
def http_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"tcp://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


# the bound a refusal must meet: the two timeouts plus a new interpreter on a loaded machine
BOUND_S = DASK_CONNECT_TIMEOUT_S + DASK_HANDSHAKE_TIMEOUT_S + 20.0


def test_an_http_port_is_refused_in_seconds_and_no_store_is_created(tmp_path, http_server):
    """Before: the CLI hung > 400 s, with the store created meanwhile."""
    spec = write_spec(tmp_path / "s.toml", seeds=(0,))
    t0 = time.monotonic()
    proc = cli("sweep", spec, "--dask", http_server, timeout=90)
    took = time.monotonic() - t0
    line = one_error_line(proc, "did not answer Dask's handshake")
    assert http_server in line and took < BOUND_S, (took, line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


@pytest.mark.parametrize("kind", sorted(OTHER_PROTOCOLS))
def test_a_server_of_another_protocol_is_one_line_exit_2(tmp_path, kind):
    """Before: an SSH-like banner read as frame sizes gave 'out of memory (Unable to allocate
    2.82 EiB …)', exit 1."""
    srv = _Server(OTHER_PROTOCOLS[kind])
    try:
        spec = write_spec(tmp_path / "s.toml", seeds=(0,))
        t0 = time.monotonic()
        proc = cli_here("sweep", spec, "--dask", srv.address)  # the HTTP case: a process
        took = time.monotonic() - t0
        line = one_error_line(proc, f"no Dask scheduler at {srv.address}")
        assert "memory" not in line and took < BOUND_S, (took, line)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]
    finally:
        srv.close()


def test_nothing_listening_is_refused_at_once(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # a free port: nothing listens there
    spec = write_spec(tmp_path / "s.toml", seeds=(0,))
    t0 = time.monotonic()
    one_error_line(cli_here("sweep", spec, "--dask", f"tcp://127.0.0.1:{port}"),
                   "cannot reach Dask scheduler")
    assert time.monotonic() - t0 < 5.0  # refused: no retries until a timeout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]
