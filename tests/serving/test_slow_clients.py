"""Slow and idle clients against a real `carseg serve`: requests that never finish arriving are closed, and
the number of open connections is capped, while a normal request is still answered."""

import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from carseg.serving.server import ConnectionLimits, protocol_class
from tests.helpers import ROOT
from tests.serving.test_page import free_port, wait_for

pytestmark = pytest.mark.slow
HEADER_S, BODY_S, MAX_CONNECTIONS = 1.0, 2.0, 12


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import gzip
    import shutil

    ckpt = tmp_path_factory.mktemp("slow") / "small.ckpt"
    with gzip.open(ROOT / "tests/fixtures/legacy_unet_mnv3s_64x96.ckpt.gz") as src, open(ckpt, "wb") as dst:
        shutil.copyfileobj(src, dst)
    port = free_port()
    command = [
        *(sys.executable, "-m", "carseg.cli", "serve", "--ckpt", str(ckpt), "--port", str(port), "--quiet"),
        *("--header-timeout", str(HEADER_S), "--body-timeout", str(BODY_S)),
        *("--max-connections", str(MAX_CONNECTIONS)),
    ]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(f"http://127.0.0.1:{port}/health", proc)
        yield port, proc
    finally:
        proc.terminate()
        proc.wait(30)


def connect(port: int, data: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if data:
        sock.sendall(data)
    return sock


def closed_by_server(sock: socket.socket, within: float) -> tuple[bool, bytes]:
    """Whether the server closed `sock` within `within` seconds, and what it sent before closing."""
    sock.settimeout(within)
    got = b""
    try:
        while chunk := sock.recv(4096):
            got += chunk
        return True, got
    except TimeoutError:
        return False, got
    except ConnectionResetError:
        return True, got


def healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as answer:
        return answer.status == 200


def test_half_sent_headers_are_closed_with_408(server):
    port, _ = server
    idle = [connect(port) for _ in range(3)]  # connected, nothing sent
    half = [connect(port, b"POST /api/remove HTTP/1.1\r\nHost: 127.0.0.1\r\n") for _ in range(3)]
    start = time.monotonic()
    for sock in idle + half:
        closed, got = closed_by_server(sock, HEADER_S + 5)
        assert closed, "a request whose headers never finish must be closed"
        assert got.startswith(b"HTTP/1.1 408"), got[:60]
        sock.close()
    assert time.monotonic() - start < HEADER_S + 5
    assert healthy(port)


def test_trickled_headers_do_not_reset_the_deadline(server):
    port, _ = server
    sock = connect(port, b"GET /health HTTP/1.1\r\n")
    start = time.monotonic()
    closed = False
    while time.monotonic() - start < HEADER_S + 4:  # one byte every 0.2 s, never finishing the headers
        try:
            sock.sendall(b"X")
        except OSError:
            closed = True
            break
        time.sleep(0.2)
    if not closed:
        closed, _ = closed_by_server(sock, 2)
    assert closed and time.monotonic() - start < HEADER_S + 4
    sock.close()


def test_a_body_that_never_arrives_is_closed(server):
    port, _ = server
    head = b"POST /api/remove HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
    sock = connect(port, head + b"Content-Length: 100000\r\n\r\n" + b"x" * 10)
    start = time.monotonic()
    closed, _ = closed_by_server(sock, BODY_S + 5)
    assert closed, "an upload that stops arriving must be closed"
    assert BODY_S - 0.5 < time.monotonic() - start < BODY_S + 5
    sock.close()
    assert healthy(port)


def test_connections_beyond_the_cap_are_refused_when_every_one_is_busy(server):
    port, proc = server
    held = [connect(port, b"GET /health HTTP/1.1\r\n") for _ in range(MAX_CONNECTIONS)]  # requests arriving
    time.sleep(0.3)
    extra = connect(port)
    closed, got = closed_by_server(extra, 3)
    assert closed and got.startswith(b"HTTP/1.1 503"), got[:60]
    extra.close()
    for sock in held:  # the deadline frees the places: a normal request is answered after it
        closed_by_server(sock, HEADER_S + 5)
        sock.close()
    assert healthy(port)
    assert proc.poll() is None


def test_idle_connections_holding_every_place_cannot_lock_a_client_out(server):
    port, _ = server
    idle = [connect(port) for _ in range(MAX_CONNECTIONS)]  # connected, silent
    time.sleep(0.3)
    start = time.monotonic()
    assert healthy(port) and time.monotonic() - start < HEADER_S  # served at once, not after a deadline
    closed, _ = closed_by_server(idle[0], 1)
    assert closed, "the connection idle longest makes room"
    for sock in idle:
        sock.close()


def _answers(sock: socket.socket, within: float = 5) -> bytes:
    closed, got = closed_by_server(sock, within)
    sock.close()
    return got


def test_a_request_with_two_framings_is_refused_and_what_it_hides_is_never_answered(server):
    port, _ = server
    hidden = b"GET /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    body = b"0\r\n\r\n" + hidden
    head = b"POST /api/remove HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
    got = _answers(connect(port, head + b"Content-Length: %d\r\n\r\n" % len(body) + body))
    assert got.startswith(b"HTTP/1.1 400") and got.count(b"HTTP/1.1 ") == 1, got
    assert b"bad_framing" in got


def test_a_request_without_host_gets_the_apis_json_refusal(server):
    port, _ = server
    got = _answers(connect(port, b"GET /health HTTP/1.0\r\n\r\n"))
    assert got.startswith(b"HTTP/1.1 400") and b'"code":"bad_host"' in got.replace(b" ", b""), got


def test_the_limits_are_checked():
    for bad in (
        ConnectionLimits(header_timeout=0),
        ConnectionLimits(body_timeout=-1),
        ConnectionLimits(max_connections=0),
    ):
        with pytest.raises(ValueError, match="timeout|max_connections"):
            protocol_class(bad)
    assert protocol_class(ConnectionLimits(max_connections=3)).limits.max_connections == 3
