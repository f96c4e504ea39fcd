"""Chapter 8: the OpenAI-compatible HTTP server (FastAPI on uvicorn, as vLLM's).

    minillm serve --stage unified --port 8000                     # the embedded default model
    curl localhost:8000/v1/completions -H 'Content-Type: application/json' \\
         -d '{"model": "pystd-llama", "prompt": "def fib(n):", "max_tokens": 32, "stream": true}'

Routes: GET /health, GET /v1/models, GET /metrics (Prometheus text), POST /v1/completions and
POST /v1/chat/completions, each streamed as server-sent events when `stream` is true (`data: {...}`
chunks, then `data: [DONE]`). Every handler runs on the event loop and only talks to the engine through
AsyncEngine's commands (async_engine.py); tokenizing and the chat template are the handler's work.

Errors are OpenAI's error object, {"error": {"message", "type", "param", "code"}}: 400 for bad input
(the field in `param`), 401 without the right bearer key when --api-key is set, 404 for an unknown
model, 503 once the engine loop has stopped. A client that disconnects has its requests aborted at
once; their KV blocks go back to the pool (watch minillm:kv_cache_usage_perc).

Checked by: pytest tests/test_serve.py.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException

from minillm.server.async_engine import AsyncEngine, EngineDeadError, RequestStream
from minillm.server.chat import ChatTemplate
from minillm.server.logprobs import completion_logprobs
from minillm.server.protocol import ChatCompletionRequest, CompletionRequest, param_of


class APIError(Exception):
    """An error the client caused or must know about, as OpenAI's error object."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    @property
    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": "invalid_request_error" if 400 <= self.status < 500 else "server_error",
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, status_code=self.status)


def build_app(
    engine: AsyncEngine,
    model_name: str,
    *,
    api_key: str | None = None,
    chat_template: ChatTemplate | None = None,
    on_shutdown=None,
) -> FastAPI:
    """The FastAPI app over a running AsyncEngine; shutting the app down stops the engine loop, then
    calls on_shutdown(number of requests aborted over the server's life) if given."""

    @asynccontextmanager
    async def lifespan(app):
        yield
        num_aborted = engine.shutdown()
        if on_shutdown is not None:
            on_shutdown(num_aborted)

    app = FastAPI(title="minillm", lifespan=lifespan)
    tokenizer = engine.engine.tokenizer
    max_model_len = engine.engine.max_model_len
    chat_template = chat_template or ChatTemplate(None)
    created = int(time.time())

    async def check_api_key(request: Request) -> None:
        """With --api-key, every /v1 route wants `Authorization: Bearer KEY` (health and metrics stay
        open, as in vLLM, so probes and scrapers need no secret). A dependency, not an HTTP middleware:
        Starlette's BaseHTTPMiddleware wraps streamed responses in ways that break disconnect handling."""
        if api_key is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(check_api_key)])

    @app.exception_handler(APIError)
    async def api_error(request: Request, err: APIError):
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        first = err.errors()[0]
        if first["type"] == "json_invalid":
            message = (
                f"the request body is not valid JSON ({first.get('ctx', {}).get('error', first['msg'])})"
            )
            return APIError(400, message).response()
        param = _loc_to_param(first["loc"])
        if not param:
            return APIError(400, "the request body must be a JSON object").response()
        return APIError(400, f"{param}: {first['msg']}", param=param).response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        return APIError(err.status_code, str(err.detail)).response()

    @app.exception_handler(EngineDeadError)
    async def engine_dead(request: Request, err: EngineDeadError):
        return APIError(503, str(err)).response()

    @app.get("/health")
    async def health():
        if not engine.alive:
            raise EngineDeadError(f"the engine loop is not running ({engine.error or 'shut down'})")
        return {}

    @v1.get("/models")
    async def models():
        card = {"id": model_name, "object": "model", "created": created, "owned_by": "minillm"}
        return {"object": "list", "data": [{**card, "max_model_len": max_model_len}]}

    @app.get("/metrics")
    async def metrics():
        text = engine.metrics.render(await engine.snapshot())
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    def check(req) -> None:
        """The model must be ours and nothing unsupported may be asked for."""
        if req.model != model_name:
            raise APIError(404, f"The model `{req.model}` does not exist.", "model", "model_not_found")
        name = req.unsupported()
        if name is not None:
            raise APIError(400, f"{name}: not supported by minillm", param=name)

    def encode(prompt, prompt_field: str, add_special_tokens: bool = True) -> list[int]:
        if isinstance(prompt, list):
            return prompt
        if tokenizer is None:
            raise APIError(400, f"{prompt_field}: this model has no tokenizer; send token ids", prompt_field)
        return tokenizer.encode(prompt, add_special_tokens=add_special_tokens)

    async def start(prompts: list, req, max_tokens, prompt_field: str) -> RequestStream:
        try:
            params = [req.sampling_params(_max_tokens(max_tokens, len(p), max_model_len)) for p in prompts]
            return await engine.add(prompts, params)
        except ValueError as err:  # SamplingParams and intake name the field in their message
            raise APIError(400, str(err), param_of(str(err), prompt_field)) from None

    @v1.post("/completions")
    async def completions(req: CompletionRequest, request: Request):
        check(req)
        try:
            prompts = [encode(p, "prompt") for p in req.prompts()]
        except ValueError as err:
            raise APIError(400, str(err), "prompt") from None
        stream = await start(prompts, req, req.max_tokens, "prompt")
        rid, head = f"cmpl-{uuid.uuid4().hex}", {"created": int(time.time()), "model": model_name}
        head = {"id": rid, "object": "text_completion", **head}
        if req.stream:
            usage = req.stream_options is not None and req.stream_options.include_usage

            def chunk(i, out):
                choice = {
                    "index": i,
                    "text": out.delta_text,
                    "logprobs": None,
                    "finish_reason": out.finish_reason,
                }
                return {**head, "choices": [choice]}

            return _sse(stream, chunk, head, usage)
        finals = await _collect(stream, request)
        choices = [
            {
                "index": i,
                "text": (_prompt_text(p, tokenizer) if req.echo else "") + o.text,
                "logprobs": None if req.logprobs is None else completion_logprobs(tokenizer, o, req.echo),
                "finish_reason": o.finish_reason,
            }
            for i, (p, o) in enumerate(zip(req.prompts(), finals))
        ]
        return {**head, "choices": choices, "usage": _usage(finals)}

    @v1.post("/chat/completions")
    async def chat_completions(req: ChatCompletionRequest, request: Request):
        check(req)
        try:
            text = chat_template.render(req.chat_messages(), req.add_generation_prompt)
            # the template writes any BOS itself (Llama 3's does), as vLLM assumes: no second one
            prompt = encode(text, "messages", add_special_tokens=False)
        except ValueError as err:
            raise APIError(400, str(err), param_of(str(err), "messages")) from None
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        stream = await start([prompt], req, max_tokens, "messages")
        rid, head = f"chatcmpl-{uuid.uuid4().hex}", {"created": int(time.time()), "model": model_name}
        if req.stream:
            usage = req.stream_options is not None and req.stream_options.include_usage
            head = {"id": rid, "object": "chat.completion.chunk", **head}
            first = {
                **head,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ],
            }

            def chunk(i, out):
                choice = {
                    "index": i,
                    "delta": {"content": out.delta_text} if out.delta_text else {},
                    "logprobs": None,
                    "finish_reason": out.finish_reason,
                }
                return {**head, "choices": [choice]}

            return _sse(stream, chunk, head, usage, first=first)
        (final,) = await _collect(stream, request)
        message = {"role": "assistant", "content": final.text}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": final.finish_reason}
        return {"id": rid, "object": "chat.completion", **head, "choices": [choice], "usage": _usage([final])}

    app.include_router(v1)
    return app


def _max_tokens(requested: int | None, prompt_len: int, max_model_len: int) -> int:
    """None: as many as the model's length allows (vLLM's rule), at least one so intake can say why
    the prompt does not fit."""
    return requested if requested is not None else max(1, max_model_len - prompt_len)


def _prompt_text(prompt, tokenizer) -> str:
    """What echo puts before the text: the prompt as sent, or its token ids decoded."""
    return prompt if isinstance(prompt, str) else tokenizer.decode(prompt) if tokenizer is not None else ""


def _usage(finals) -> dict:
    prompt = sum(len(o.prompt_token_ids) for o in finals)
    completion = sum(len(o.token_ids) for o in finals)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _loc_to_param(loc) -> str:
    """Pydantic's error location as a field path: ("body", "messages", 0, "role") -> "messages[0].role";
    union tags such as "list[int]" or "str" are left out."""
    path = ""
    for part in loc[1:]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif "[" in part or part in ("str", "int", "float", "bool", "dict", "list") or part[:1].isupper():
            continue
        else:
            path += ("." if path else "") + part
    return path


async def _collect(stream: RequestStream, request: Request) -> list:
    """Every request's final output, in call order. If the client disconnects first, the collection is
    cancelled, which aborts the requests (RequestStream) and frees their KV blocks."""

    async def collect():
        finals = {}
        async for i, out in stream:
            if out.finished:
                finals[i] = out
        return [finals[i] for i in range(len(finals))]

    async def disconnected():
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task, watcher = asyncio.create_task(collect()), asyncio.create_task(disconnected())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if task not in done:
        raise APIError(499, "the client closed the request")
    try:
        return task.result()
    except EngineDeadError as err:
        raise APIError(503, str(err)) from None


def _sse(stream: RequestStream, chunk, head: dict, include_usage: bool, first=None):
    """Server-sent events: one `data: {json}` per output that carries new tokens or a finish reason (its
    text may be empty: a token that ends mid-character, or text held back while it could start a stop
    string; vLLM streams those chunks too, and clients time tokens by them), the usage chunk if asked
    for, then `data: [DONE]`. An error mid-stream is sent as an error event (the status line has already
    gone out)."""

    async def events():
        finals, num_tokens = [], {}
        try:
            if first is not None:
                yield _event(first)
            async for i, out in stream:
                grew = len(out.token_ids) > num_tokens.get(i, 0)
                num_tokens[i] = len(out.token_ids)
                if grew or out.delta_text or out.finished:
                    yield _event(chunk(i, out))
                if out.finished:
                    finals.append(out)
            if include_usage:
                yield _event({**head, "choices": [], "usage": _usage(finals)})
        except EngineDeadError as err:
            yield _event(APIError(503, str(err)).body)
        finally:
            stream.close()
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
