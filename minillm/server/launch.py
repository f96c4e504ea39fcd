"""Chapter 8: start `minillm serve` in a child process and stop it, for benchmarks and notebooks.

    with launch_server(stage="unified") as srv:       # a free port on 127.0.0.1, ready when it returns
        print(srv.base_url)                           # http://127.0.0.1:PORT/v1 is what openai wants
    # leaving sends SIGTERM and waits: the server drains, aborts what is left and exits

A child process, not a thread: the server then has a core and a GIL of its own, as in production,
and what the client measures is not the client's own work.

Checked by: pytest tests/test_serve.py -k sigterm; used by minillm/bench/serve.py.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import httpx


@dataclass
class ServerProcess:
    base_url: str  # http://127.0.0.1:PORT
    model_name: str
    process: subprocess.Popen
    log: collections.deque  # the child's last stderr lines, for error messages

    @property
    def api_url(self) -> str:
        return self.base_url + "/v1"


@contextmanager
def launch_server(
    model: str | None = None,
    *,
    stage: str | None = None,
    args: list[str] | tuple = (),
    startup_timeout_s: float = 300.0,
    shutdown_timeout_s: float = 30.0,
    env: dict | None = None,
):
    """Run `python -m minillm.cli serve --port 0 [model] [--stage S] [args]`; yield a ServerProcess
    once /health answers. args: any other `minillm serve` flags (engine options, --api-key, ...)."""
    cmd = [sys.executable, "-m", "minillm.cli", "serve", "--host", "127.0.0.1", "--port", "0", *args]
    if model is not None:
        cmd.append(model)
    if stage is not None:
        cmd += ["--stage", stage]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
    )
    log: collections.deque = collections.deque(maxlen=50)
    ready: dict = {}
    seen = threading.Event()

    def drain():  # read stderr to the end: a full pipe would block the server
        for line in proc.stderr:
            log.append(line.rstrip())
            m = re.search(r"ready on (http://\S+) \(model (\S+), stage", line)
            if m and not seen.is_set():
                ready.update(url=m.group(1), name=m.group(2))
                seen.set()
        seen.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        if not seen.wait(startup_timeout_s) or not ready:
            raise RuntimeError("minillm serve did not start:\n" + "\n".join(log))
        deadline = time.monotonic() + startup_timeout_s
        while True:
            try:
                if httpx.get(ready["url"] + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("minillm serve is not healthy:\n" + "\n".join(log))
            time.sleep(0.1)
        yield ServerProcess(ready["url"], ready["name"], proc, log)
    finally:
        stop_server(proc, shutdown_timeout_s)


def stop_server(proc: subprocess.Popen, timeout_s: float = 30.0) -> int:
    """SIGTERM, then wait; SIGKILL only if the server does not exit in time. Returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@contextmanager
def serve_in_thread(llm, *, model_name: str = "minillm", **server_options):
    """Serve an LLM from a thread of this process on a free port (tests: no start-up cost, and the
    model is already loaded). Yields the base URL; leaving stops the server and its engine loop.
    server_options: create_server's (api_key, chat_template, ...)."""
    from minillm.server import create_server, open_socket

    server, engine = create_server(llm, model_name=model_name, **server_options)
    sock = open_socket("127.0.0.1", 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server thread stopped during start-up")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        engine.shutdown()
        sock.close()
