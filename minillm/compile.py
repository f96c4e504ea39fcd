"""Chapter 6: torch.compile, seen from inside, and the engine's compiled model step.

TorchDynamo hooks CPython's frame evaluation, turns the PyTorch ops it meets into an FX graph, and
guards what it assumed (shapes, dtypes, Python values). A guard that fails recompiles; a construct it
cannot trace (reading a tensor back with .item(), a print, a branch on data) breaks the graph: the part
before runs compiled, Python runs the rest, and tracing resumes after it. AOTAutograd then traces the
graph ahead of time, and TorchInductor fuses element-wise ops and writes Triton (GPU) or C++ (CPU).

InspectingBackend is a torch.compile backend that keeps what Dynamo hands it:

    from minillm.compile import InspectingBackend
    b = InspectingBackend()                  # then compiles with "eager", "aot_eager" or "inductor"
    torch.compile(f, backend=b)(x)
    b.graphs, b.breaks, b.recompiles, print(b.report())

compile_model() is what stage `compiled` runs: the model's forward under Inductor with every size
symbolic from the first trace, so one graph serves every batch of one structure (prefill-only,
decode-only, mixed) instead of one graph per shape.

Checked by: pytest -m ch6.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch._dynamo
import torch.fx.experimental._config as fx_config
from torch._dynamo.backends.registry import lookup_backend

COMPILE_MODES = (None, "default", "max-autotune")
# A serving forward meets a handful of structures: prefill-only, decode-only and mixed batches, and
# size-1 cases that some ops still decide on (a reshape of one token, the contiguity of one row): about
# six graphs. Dynamo's default limit of 8 leaves no margin, so the compiled step raises it.
RECOMPILE_LIMIT = 16


@dataclass
class GraphRecord:
    graph_module: torch.fx.GraphModule
    frame_compile_id: int | None  # 0: first compile of its frame; more: a recompile
    op_counts: Counter = field(default_factory=Counter)  # ops called in the graph, by name

    @property
    def num_nodes(self) -> int:
        return len(self.graph_module.graph.nodes)

    @property
    def num_ops(self) -> int:
        return sum(self.op_counts.values())


@dataclass
class GraphBreak:
    reason: str
    filename: str
    lineno: int
    line: str  # the user's source line where Dynamo stopped


def op_histogram(gm: torch.fx.GraphModule) -> Counter:
    counts: Counter = Counter()
    for node in gm.graph.nodes:
        if node.op == "call_function":
            counts[getattr(node.target, "__name__", str(node.target))] += 1
        elif node.op == "call_method":
            counts[f".{node.target}"] += 1
        elif node.op == "call_module":
            counts[type(gm.get_submodule(node.target)).__name__] += 1
    return counts


class _RecompileListener(logging.Handler):
    """Dynamo's structured trace ('torch.__trace', what tlparse reads) reports each recompile's failed
    guards as a 'recompile_reasons' artifact; this handler keeps those."""

    def __init__(self, sink: list[str]):
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "metadata", None) or {}
        if meta.get("artifact", {}).get("name") != "recompile_reasons":
            return
        payload = getattr(record, "payload", None) or ""
        try:
            reasons = json.loads(payload)
        except (TypeError, ValueError):
            reasons = payload
        for reason in reasons if isinstance(reasons, list) else [reasons]:
            self.sink.append(str(reason).strip())


class InspectingBackend:
    """Records every graph, graph break and recompile, then compiles the graph with `then`."""

    def __init__(self, then: str = "eager"):
        if then not in ("eager", "aot_eager", "inductor"):
            raise ValueError(f"then must be 'eager', 'aot_eager' or 'inductor', got {then!r}")
        self.then = then
        self.graphs: list[GraphRecord] = []
        self.breaks: list[GraphBreak] = []
        self.recompiles: list[str] = []  # the guard that failed, e.g. "0/1: x.size()[0] == 3"
        self._seen_breaks = len(torch._dynamo.utils.graph_break_reasons)
        self._listener = _RecompileListener(self.recompiles)
        logging.getLogger("torch.__trace").addHandler(self._listener)

    def close(self) -> None:
        """Stop listening for recompiles (the structured trace costs compile time while on)."""
        logging.getLogger("torch.__trace").removeHandler(self._listener)

    def __enter__(self) -> InspectingBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        self._collect_breaks()
        cid = torch._guards.CompileContext.current_compile_id()
        self.graphs.append(GraphRecord(gm, cid.frame_compile_id if cid else None, op_histogram(gm)))
        if self.then == "eager":
            return gm.forward
        return lookup_backend(self.then)(gm, example_inputs)

    def _collect_breaks(self) -> None:
        reasons = torch._dynamo.utils.graph_break_reasons
        for r in reasons[self._seen_breaks :]:
            if not r.graph_break:
                continue
            frame = r.user_stack[-1] if r.user_stack else None
            self.breaks.append(
                GraphBreak(
                    r.reason.strip(),
                    frame.filename if frame else "?",
                    frame.lineno if frame else 0,
                    (frame.line or "").strip() if frame else "",
                )
            )
        self._seen_breaks = len(reasons)

    def report(self, top: int = 8) -> str:
        self._collect_breaks()
        lines = [
            f"{len(self.graphs)} graph(s), {len(self.breaks)} graph break(s), "
            f"{len(self.recompiles)} recompile(s); compiled with {self.then!r}"
        ]
        for i, g in enumerate(self.graphs):
            ops = ", ".join(f"{name} x{n}" for name, n in g.op_counts.most_common(top))
            lines.append(f"  graph {i}: {g.num_nodes} nodes, {g.num_ops} ops: {ops}")
        for b in self.breaks:
            where = f"{b.filename.rsplit('/', 1)[-1]}:{b.lineno}"
            lines.append(f"  break at {where} `{b.line}`: {b.reason.splitlines()[0][:200]}")
        for r in self.recompiles:
            lines.append(f"  recompile, guard failed: {r.splitlines()[0][:200]}")
        return "\n".join(lines)


def compile_model(model, mode: str | None, backend="inductor"):
    """The model's forward compiled for serving: every size symbolic from the first trace (dynamic=True),
    sizes of 1 not specialised where an op does not insist (backed_size_oblivious), and equal sizes not
    assumed to stay equal (no duck shaping). These settings are read while Dynamo traces, so every call
    runs under them. mode: "default" or "max-autotune" (Inductor's modes)."""
    if mode not in COMPILE_MODES or mode is None:
        raise ValueError(f"compile must be one of {COMPILE_MODES[1:]}, got {mode!r}")
    # The runner records its own CUDA graphs (graphs.py): Inductor's, which "max-autotune" turns on,
    # would be captured inside them. Autotuning without them is the same kernels.
    inductor_mode = "max-autotune-no-cudagraphs" if mode == "max-autotune" else mode
    options = {"mode": inductor_mode} if backend == "inductor" else {}
    compiled = torch.compile(model.forward, backend=backend, dynamic=True, **options)

    def forward(input_ids, positions, attn_backend, meta):
        with (
            fx_config.patch(backed_size_oblivious=True, use_duck_shape=False),
            torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT),
        ):
            return compiled(input_ids, positions, attn_backend, meta)

    return forward
