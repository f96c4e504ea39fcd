"""Chapter 9: running programs. A program is a Python function over a state; its calls run on a
backend (Runtime over an in-process LLM, or Endpoint over an OpenAI-compatible server).

    @ml.function
    def qa(s, question):
        s += "Q: " + question + "\\nA:" + ml.gen("answer", max_tokens=16, stop="\\n")
        return s["answer"]

    state = qa.run(question="...", backend=ml.Runtime(llm))       # state["answer"], state.ret_value
    states = qa.run_batch([{"question": q} for q in qs], backend=rt)

As in SGLang's interpreter, `s += ...` does not wait: each state owns a worker thread that runs its
appends in order, and reading a value (s[name], s.text()) waits for them. So forks `for f in
s.fork(3): f += gen(...)` send three requests at once, and run_batch's programs run on threads side
by side: their calls meet in the engine's scheduler and batch there, and their shared text meets in
the radix cache.

Checked by: pytest -m ch9.
"""

from __future__ import annotations

import functools
import inspect
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from minillm.lang.ir import Concat, Gen, Select

_default_backend = None


def set_default_backend(backend) -> None:
    global _default_backend
    _default_backend = backend


class ProgramState:
    """The text so far, the captured values, and a worker that runs this state's appends in order."""

    def __init__(self, backend, text: str = "", variables: dict | None = None, meta: dict | None = None):
        self.backend = backend
        self._text = text
        self.variables = dict(variables or {})
        self.meta_info = dict(meta or {})  # name -> what the backend reported (tokens, cached tokens, scores)
        self.ret_value = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="minillm-lang")
        self._last: Future | None = None
        self._lock = threading.Lock()
        self.children: list[ProgramState] = []

    # -- appending (returns at once) -------------------------------------------------------------
    def __iadd__(self, piece):
        if isinstance(piece, Concat):
            for part in piece.parts:
                self.__iadd__(part)
            return self
        if not isinstance(piece, (str, Gen, Select)):
            raise ValueError(f"a program appends text, gen(...) or select(...), got {type(piece).__name__}")
        with self._lock:
            self._last = self._worker.submit(self._apply, piece)
        return self

    def _apply(self, piece) -> None:
        if isinstance(piece, str):
            self._text += piece
        elif isinstance(piece, Gen):
            text, meta = self.backend.generate(self._text, piece.params)
            self._capture(piece.name, text, meta)
        else:
            index, meta = self.backend.select(self._text, piece.choices, piece.choices_method)
            self._capture(piece.name, piece.choices[index], meta)

    def _capture(self, name, text: str, meta: dict) -> None:
        self._text += text
        if name is not None:
            self.variables[name] = text
            self.meta_info[name] = meta

    # -- reading (waits for the appends) ---------------------------------------------------------
    def sync(self) -> None:
        """Wait for every append so far; an error inside one is raised here."""
        with self._lock:
            last = self._last
        if last is not None:
            last.result()

    def text(self) -> str:
        self.sync()
        return self._text

    def __getitem__(self, name: str):
        self.sync()
        if name not in self.variables:
            raise KeyError(f"no captured value named {name!r} (have {sorted(self.variables)})")
        return self.variables[name]

    def get_meta_info(self, name: str) -> dict:
        self.sync()
        return self.meta_info[name]

    def fork(self, n: int = 1) -> list[ProgramState]:
        """n states that start from this state's text and values and continue on their own."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"fork: n must be an int >= 1, got {n!r}")
        self.sync()
        forks = [ProgramState(self.backend, self._text, self.variables, self.meta_info) for _ in range(n)]
        self.children.extend(forks)
        return forks

    def close(self) -> None:
        """Wait for the appends, then stop the worker threads (this state's and its forks')."""
        for child in self.children:
            child.close()
        try:
            self.sync()
        finally:
            self._worker.shutdown(wait=True)

    def __repr__(self) -> str:
        return f"ProgramState(text={self._text[-60:]!r}, variables={sorted(self.variables)})"


class SglFunction:
    """A program: `def f(s, ...)` under @function. run() and run_batch() execute it on a backend."""

    def __init__(self, func):
        params = list(inspect.signature(func).parameters)
        if not params:
            raise ValueError(
                f"function {func.__name__}: its first argument must be the state (def f(s, ...))"
            )
        self.func = func
        self.arg_names = params[1:]
        functools.update_wrapper(self, func)

    def run(self, *, backend=None, **kwargs) -> ProgramState:
        backend = backend or _default_backend
        if backend is None:
            raise ValueError("backend: pass backend=Runtime(llm) or Endpoint(url), or set_default_backend")
        state = ProgramState(backend)
        try:
            state.ret_value = self.func(state, **kwargs)
        finally:
            state.close()
        return state

    def run_batch(
        self, batch_kwargs: list[dict], *, backend=None, num_threads: int | None = None
    ) -> list[ProgramState]:
        """Run one program instance per kwargs dict, concurrently (one thread each, at most
        num_threads at once): their calls batch in the engine. States come back in order."""
        if not isinstance(batch_kwargs, (list, tuple)) or any(not isinstance(k, dict) for k in batch_kwargs):
            raise ValueError("batch_kwargs must be a list of dicts of the function's arguments")
        if not batch_kwargs:
            return []
        with ThreadPoolExecutor(max_workers=num_threads or len(batch_kwargs)) as pool:
            futures = [pool.submit(self.run, backend=backend, **kw) for kw in batch_kwargs]
            return [f.result() for f in futures]

    def __call__(self, *args, **kwargs):
        return self.func(*args, **kwargs)


def function(func) -> SglFunction:
    """@function: mark `def f(s, ...)` as a program."""
    return SglFunction(func)
