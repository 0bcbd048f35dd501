"""A real OpenAI-compatible server for the paraphrase tests, started offline, and a small
fault-injecting HTTP proxy in front of it.

The server is ``transformers serve`` (it ships with transformers) on the bundled SmolLM2 as a
local folder (``gradlens.models.resolve_model_dir``), with ``HF_HUB_OFFLINE=1``: nothing comes
from a hub. It listens on a free port of 127.0.0.1 in its own process group, killed as a whole
at the end (and by the kernel when the test process dies first). Its model name is the
folder's path (a pinned server refuses any other name). One torch thread: on 2 shared cores a
second one makes each token several times slower.

The proxy forwards every request to the server unchanged, except the next ``fail`` chat
requests, which it answers itself with ``status`` (and ``Retry-After`` when given) without
forwarding, or the next ``hang_count``, which it holds ``hang`` seconds and then hangs up on
without an answer (a server that does not answer: a client timeout). It can also empty the
content of the next ``blank`` answers, and hold every request after the first ``gate_after``
until ``gate`` is set, then hang up on it (to stop a client at a known point). It counts what
it saw, so a test can tell how many requests a run sent, and records their ``Authorization``
headers.
"""

from __future__ import annotations

import atexit
import ctypes
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from gradlens.models.loading import resolve_model_dir

_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served_smollm2(log_dir: Path, start_timeout: float = 300.0):
    """Yield ``(base_url, model_name)`` of ``transformers serve`` on the bundled SmolLM2;
    the server's process group is killed on exit."""
    model_dir = str(resolve_model_dir("smollm2"))
    port = free_port()
    exe = Path(sys.executable).with_name("transformers")
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_CACHE=str(log_dir / "hf-cache"),  # empty: /v1/models lists nothing, offline
        OMP_NUM_THREADS="1",  # the tests share 2 cores with the client and pytest
        TOKENIZERS_PARALLELISM="false",
    )
    (log_dir / "hf-cache").mkdir(parents=True, exist_ok=True)
    log = (log_dir / "serve.log").open("wb")
    proc = subprocess.Popen(
        [str(exe), "serve", model_dir, "--host", "127.0.0.1", "--port", str(port)]
        + ["--device", "cpu", "--log-level", "warning"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # its own process group, killed whole at the end
        preexec_fn=_die_with_parent,  # and gone with pytest, should pytest be killed
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"transformers serve exited with {proc.returncode}: "
                    + (log_dir / "serve.log").read_text(errors="replace")[-2000:]
                )
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"transformers serve not ready after {start_timeout:.0f} s")
            time.sleep(0.5)
        yield base + "/v1", model_dir
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
        log.close()


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of ``upstream`` (``http://host:port``) that fails or
    delays the next chat requests on demand. ``url``: its base URL with ``/v1``."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.split("://", 1)[-1].split("/", 1)[0]
        self.lock = threading.Lock()
        self.fail = 0  # the next `fail` chat requests get `status` without being forwarded
        self.status = 500
        self.retry_after: str | None = None
        self.hang = 0.0  # the next `hang_count` are held this long, then hung up on
        self.hang_count = 0
        self.blank = 0  # the next `blank` answers are forwarded with their content emptied
        self.gate_after: int | None = None  # requests after this many wait for `gate`
        self.gate = threading.Event()
        self.seen = 0  # chat requests received
        self.failed = 0  # answered with `status` by the proxy
        self.forwarded = 0
        self.authorization: list[str] = []  # the Authorization header of every chat request
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                self._forward(b"")

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy.lock:
                    proxy.seen += 1
                    proxy.authorization.append(self.headers.get("Authorization", ""))
                    failing = proxy.fail > 0
                    if failing:
                        proxy.fail -= 1
                        proxy.failed += 1
                    hanging = not failing and proxy.hang_count > 0
                    if hanging:
                        proxy.hang_count -= 1
                    gate = proxy.gate if proxy.gate_after is not None else None
                    gated = gate is not None and proxy.seen > proxy.gate_after
                if failing:
                    payload = b'{"error": {"message": "injected fault", "type": "server_error"}}'
                    self.send_response(proxy.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    if proxy.retry_after is not None:
                        self.send_header("Retry-After", proxy.retry_after)
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if gated:  # held until released, then hung up on (its client is gone by then)
                    gate.wait(timeout=120)
                    self.close_connection = True
                    return
                if hanging:  # a server that does not answer: hold, then hang up
                    time.sleep(proxy.hang)
                    self.close_connection = True
                    return
                self._forward(body)

            def _forward(self, body: bytes):
                conn = http.client.HTTPConnection(proxy.upstream, timeout=600)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                except OSError:
                    self.send_error(502)
                    return
                finally:
                    conn.close()
                blank = False
                with proxy.lock:
                    if self.command == "POST":
                        proxy.forwarded += 1
                        blank = proxy.blank > 0 and resp.status == 200
                        proxy.blank -= blank
                if blank:
                    reply = json.loads(data)
                    reply["choices"][0]["message"]["content"] = ""
                    data = json.dumps(reply).encode()
                try:
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up
                    self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        with self.lock:
            self.fail = self.failed = self.seen = self.forwarded = self.hang_count = 0
            self.blank, self.gate_after, self.authorization = 0, None, []
            self.gate.set()  # release anything still held
            self.gate = threading.Event()
            self.status, self.retry_after, self.hang = 500, None, 0.0

    def inject(self, fail: int, status: int = 500, retry_after: str | None = None) -> None:
        with self.lock:
            self.fail, self.status, self.retry_after = fail, status, retry_after

    def close(self) -> None:
        self.gate.set()  # release what is held
        self.server.shutdown()
        self.server.server_close()


_SHARED: dict[str, tuple[str, str]] = {}


def shared_server(log_dir: Path) -> tuple[str, str]:
    """``(base_url, model_name)`` of one server for the whole test session (it takes ~20 s to
    start on 2 busy cores): started by the first test module that asks, its process group
    killed when the session's interpreter exits."""
    if "server" not in _SHARED:
        ctx = served_smollm2(log_dir)
        _SHARED["server"] = ctx.__enter__()
        atexit.register(ctx.__exit__, None, None, None)
    return _SHARED["server"]
