"""Chapter 8: the async engine loop that the HTTP server talks to.

The Engine is a plain synchronous object and not thread-safe. AsyncEngine gives it one thread of its
own (the engine loop) and talks to it through commands: a coroutine that wants a request added,
aborted or its metrics read puts a command on a thread-safe queue and awaits a future. The loop thread
is the only caller of engine.add_request, abort_request and step:

    event loop (asyncio, HTTP)                    engine loop thread
    await add(): put ("add", ...) --------------> drain commands: add_requests / abort_request
                 await the request ids <--------- set the future (or intake's ValueError)
    async for out in stream:                      step(): one RequestOutput per advanced request,
                 await queue.get() <------------- handed over by loop.call_soon_threadsafe
    leaving early: put ("abort", id) ----------> abort_request: the KV blocks are free at once

An idle loop sleeps on a threading.Event that every command sets, so a new request is picked up at
once and an idle server burns no CPU. Each call's deltas go into its own asyncio.Queue. A reader that
falls behind (a slow client) drains whatever has piled up and merges it, one output per request, so a
lagging stream costs one message per read, not one per token, and the engine never waits for a client
(vLLM's output collector does the same). Nothing bounds the waiting queue: admission is the
scheduler's business (max_num_seqs, the KV pool), and a request that can never fit is refused by intake.

Checked by: pytest tests/test_serve.py.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from minillm.engine import Engine
from minillm.request import RequestOutput, SamplingParams
from minillm.server.metrics import ServerMetrics


class EngineDeadError(RuntimeError):
    """The engine loop stopped (shutdown or a failed step): no request can be served."""


@dataclass
class _Live:
    """A request the loop is serving: where its outputs go."""

    loop: asyncio.AbstractEventLoop
    outputs: asyncio.Queue


class AsyncEngine:
    """One Engine stepped by one background thread; coroutines add, stream and abort requests."""

    def __init__(self, engine: Engine, model_name: str = "minillm", idle_wait_s: float = 0.05):
        self.engine = engine
        self.metrics = ServerMetrics(model_name)
        self.idle_wait_s = idle_wait_s  # how long an idle loop sleeps before looking for commands again
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._live: dict[int, _Live] = {}  # touched by the loop thread only
        self._stopping = False
        self._closed = False  # set, under _closing, when the loop has failed its last pending command
        self._closing = threading.Lock()
        self.error: BaseException | None = None  # why the loop died, if it did
        self._thread = threading.Thread(target=self._run, name="minillm-engine-loop", daemon=True)
        self._thread.start()

    # -- called from the event loop ----------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.error is None and not self._stopping

    async def _call(self, name: str, *args):
        """Run a command on the loop thread and await its result (exceptions come back raised)."""
        if not self.alive:
            raise EngineDeadError(f"the engine loop is not running ({self.error or 'shut down'})")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._closing:  # a command queued after the loop's final drain would wait forever
            if self._closed:
                raise EngineDeadError(f"the engine loop is not running ({self.error or 'shut down'})")
            self._commands.put((name, args, loop, future))
        self._wake.set()
        return await future

    async def add(self, prompts: list, params: list[SamplingParams]) -> RequestStream:
        """Validate and queue a call's requests (all or none: Engine.add_requests); a ValueError naming
        the field comes back before anything is queued. Iterate the returned stream for the outputs."""
        outputs: asyncio.Queue = asyncio.Queue()
        arrival_time = time.perf_counter()  # TTFT counts from here: time in the command queue is latency too
        ids = await self._call("add", prompts, params, outputs, asyncio.get_running_loop(), arrival_time)
        return RequestStream(self, ids, outputs)

    def abort(self, request_ids) -> None:
        """Abort requests from any thread (the loop thread does it at its next turn, freeing KV blocks)."""
        for request_id in request_ids:
            self._commands.put(("abort", (request_id,), None, None))
        self._wake.set()

    async def snapshot(self) -> dict:
        """The loop's gauges (running, waiting, KV usage, prefix cache) read on the loop thread."""
        return await self._call("snapshot")

    def shutdown(self, timeout_s: float = 10.0) -> int:
        """Stop the loop: requests still in flight are aborted (their streams end with an error).
        Returns how many requests were aborted over the server's life."""
        self._stopping = True
        self._commands.put(("stop", (), None, None))
        self._wake.set()
        self._thread.join(timeout_s)
        return self.metrics.num_aborted

    # -- the loop thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                if not self._drain_commands():
                    break
                if self.engine.has_unfinished():
                    outputs = self.engine.step()
                    self._deliver(outputs)
                else:
                    self._wake.wait(self.idle_wait_s)
                    self._wake.clear()
            self._abort_all(EngineDeadError("the server is shutting down"))
        except BaseException as err:  # a failed step: every request in flight gets the error
            self.error = err
            self._abort_all(EngineDeadError(f"engine step failed: {err!r}"))

    def _drain_commands(self) -> bool:
        """Carry out every queued command; False once "stop" has been seen."""
        while True:
            try:
                name, args, loop, future = self._commands.get_nowait()
            except queue.Empty:
                return True
            if name == "stop":
                return False
            try:
                result = getattr(self, "_cmd_" + name)(*args)
            except Exception as err:  # ValueError from intake: the caller answers 400
                if future is not None:
                    loop.call_soon_threadsafe(_settle, future, None, err)
            else:
                if future is not None:
                    loop.call_soon_threadsafe(self._settle_or_abort, name, future, result)

    def _cmd_add(self, prompts, params, outputs: asyncio.Queue, loop, arrival_time) -> list[int]:
        request_ids = self.engine.add_requests(prompts, params, arrival_time=arrival_time)
        for request_id in request_ids:
            self._live[request_id] = _Live(loop, outputs)
        return request_ids

    def _cmd_abort(self, request_id: int) -> None:
        if self._live.pop(request_id, None) is not None:
            self.engine.abort_request(request_id)
            self.metrics.on_abort()

    def _cmd_snapshot(self) -> dict:
        return self.metrics.gauges(self.engine, num_live=len(self._live))

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        """Hand each output to its request's queue: one thread-safe call per event loop per step."""
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for out in outputs:
            live = self._live.get(out.request_id)
            if live is None:
                continue
            if out.finished:
                del self._live[out.request_id]
                self.metrics.on_finish(out)
            by_loop.setdefault(live.loop, []).append((live.outputs, out))
        for loop, items in by_loop.items():
            loop.call_soon_threadsafe(_put_all, items)

    def _abort_all(self, err: BaseException) -> None:
        """Every request in flight gets err first (so no client waits forever), then its blocks back; an
        engine whose step just failed may fail to abort too, and that must not stop the others."""
        for live in self._live.values():
            live.loop.call_soon_threadsafe(live.outputs.put_nowait, err)
        for request_id in list(self._live):
            try:
                self.engine.abort_request(request_id)
            except Exception:
                pass
            self.metrics.on_abort()
        self._live.clear()
        with self._closing:
            self._closed = True
            while True:  # commands that will never run: fail their futures
                try:
                    _, _, loop, future = self._commands.get_nowait()
                except queue.Empty:
                    break
                if future is not None:
                    loop.call_soon_threadsafe(_settle, future, None, EngineDeadError(str(err)))

    def _settle_or_abort(self, name: str, future: asyncio.Future, result) -> None:
        """On the event loop: hand a command's result over; a request whose caller was cancelled while
        it was being added (the client left at once) is aborted rather than run for nobody."""
        if future.done() and name == "add":
            self.abort(result)
            return
        _settle(future, result, None)


class RequestStream:
    """The outputs of one call's requests, as (index in the call, RequestOutput) pairs in the order the
    engine produced them. Each output's delta_text is what is new since that request's previous one;
    when the reader lags, whatever piled up for a request arrives merged into one output.

    Leaving the iteration early (a client that disconnects, a cancelled task) aborts the requests still
    unfinished; so does dropping a stream that was never iterated."""

    def __init__(self, engine: AsyncEngine, request_ids: list[int], outputs: asyncio.Queue):
        self.engine, self.request_ids, self.outputs = engine, request_ids, outputs
        self.index = {rid: i for i, rid in enumerate(request_ids)}
        self.unfinished = set(request_ids)

    async def __aiter__(self) -> AsyncIterator[tuple[int, RequestOutput]]:
        try:
            while self.unfinished:
                backlog = [await self.outputs.get()]
                while not self.outputs.empty():
                    backlog.append(self.outputs.get_nowait())
                for out in _coalesce(backlog):
                    if out.finished:
                        self.unfinished.discard(out.request_id)
                    yield self.index[out.request_id], out
        finally:
            self.close()

    def close(self) -> None:
        """Abort what is unfinished (nothing, after a full iteration)."""
        if self.unfinished:
            self.engine.abort(sorted(self.unfinished))
            self.unfinished.clear()

    def __del__(self):
        self.close()


def _coalesce(backlog: list) -> list[RequestOutput]:
    """A backlog of outputs as one per request (first-come order), deltas joined; an error is raised."""
    merged: dict[int, RequestOutput] = {}
    for out in backlog:
        if isinstance(out, BaseException):
            raise out
        old = merged.get(out.request_id)
        merged[out.request_id] = (
            out if old is None else replace(out, delta_text=old.delta_text + out.delta_text)
        )
    return list(merged.values())


def _settle(future: asyncio.Future, result, err: BaseException | None) -> None:
    if future.done():  # the caller was cancelled meanwhile
        return
    if err is not None:
        future.set_exception(err)
    else:
        future.set_result(result)


def _put_all(items) -> None:
    for q, out in items:
        q.put_nowait(out)
