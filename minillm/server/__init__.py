"""Chapter 8: serving. An OpenAI-compatible HTTP server over one engine loop.

    minillm serve --stage unified                        # 127.0.0.1:8000, the embedded default model
    minillm serve qwen3-0.6b --load-format dummy --device cuda --port 8001 --api-key secret

async_engine.py  the engine loop thread, commands in, per-request outputs out (asyncio queues)
protocol.py      OpenAI request bodies (pydantic, strict) -> SamplingParams
chat.py          chat messages -> a prompt through the checkpoint's Jinja chat template
metrics.py       /metrics in Prometheus text, vLLM's names under `minillm:`
app.py           the FastAPI routes, SSE streaming, errors, API key, disconnects

Checked by: pytest tests/test_serve.py; benchmarked by `minillm bench serve` (minillm/bench/serve.py).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path

from minillm.server.app import build_app
from minillm.server.async_engine import AsyncEngine
from minillm.server.chat import ChatTemplate, find_chat_template

__all__ = ["AsyncEngine", "build_app", "create_server", "open_socket", "serve"]


def default_model_name(model: str) -> str:
    """What /v1/models calls the model: a checkpoint folder's name, or a named config as given."""
    path = Path(model)
    return path.name if path.is_dir() else model


def open_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket; port 0 picks a free one (read it back with sock.getsockname())."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def create_server(
    llm,
    *,
    model_name: str,
    api_key: str | None = None,
    chat_template: str | None = None,
    shutdown_timeout_s: float = 5.0,
    log_level: str = "warning",
    on_shutdown=None,
):
    """(uvicorn.Server, AsyncEngine) for an LLM: the engine loop is already running; serve with
    `server.serve(sockets=[sock])` (await it, or server.run(...) in a thread)."""
    import uvicorn

    engine = AsyncEngine(llm.engine, model_name)
    tokenizer = llm.engine.tokenizer
    source = find_chat_template(tokenizer.path if tokenizer is not None else None, chat_template)
    special = _special_tokens(tokenizer)
    template = ChatTemplate(source, **special)
    app = build_app(engine, model_name, api_key=api_key, chat_template=template, on_shutdown=on_shutdown)
    config = uvicorn.Config(
        app,
        log_level=log_level,
        timeout_graceful_shutdown=shutdown_timeout_s,  # then in-flight streams are cancelled (aborted)
        access_log=False,
    )
    return uvicorn.Server(config), engine


def serve(
    model: str,
    *,
    stage: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    served_model_name: str | None = None,
    chat_template: str | None = None,
    load_format: str = "auto",
    log_level: str = "warning",
    **engine_options,
) -> None:
    """Load the model, start the engine loop and serve until SIGINT or SIGTERM. Prints one line,
    `minillm serve: ready on http://HOST:PORT (model NAME, stage S)`, once requests are accepted."""
    from minillm import LLM

    if chat_template is not None and not Path(chat_template).is_file():
        raise ValueError(f"--chat-template: no such file {chat_template!r}")  # before the model loads
    sock = open_socket(host, port)
    llm = LLM(model, stage=stage, load_format=load_format, **engine_options)
    name = served_model_name or default_model_name(model)
    server, _ = create_server(
        llm,
        model_name=name,
        api_key=api_key,
        chat_template=chat_template,
        log_level=log_level,
        on_shutdown=lambda n: print(
            f"minillm serve: stopped ({n} requests aborted)", file=sys.stderr, flush=True
        ),
    )
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"minillm serve: ready on http://{shown}:{bound} (model {name}, stage {stage})",
        file=sys.stderr,
        flush=True,
    )
    # uvicorn installs its SIGINT/SIGTERM handlers: stop accepting, let in-flight requests finish for
    # up to shutdown_timeout_s, cancel the rest (which aborts them), then the lifespan stops the engine;
    # last, uvicorn raises the signal again, so the exit status says SIGTERM as for any process
    asyncio.run(server.serve(sockets=[sock]))


def _special_tokens(tokenizer) -> dict:
    """bos_token / eos_token strings for chat templates that mention them."""
    if tokenizer is None:
        return {}
    cfg_file = tokenizer.path / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    out = {}
    for key in ("bos_token", "eos_token"):
        value = cfg.get(key)
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str):
            out[key] = value
    return out
