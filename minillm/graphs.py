"""Chapter 6: decode steps replayed as CUDA graphs (what nano-vllm, vLLM, SGLang and gpt-fast do).

A small model's decode step is hundreds of tiny kernels, each launched from Python for ~10-20 µs while
the GPU finishes it in a few: the step is launch-bound. A CUDA graph records the whole step once and
replays it with one launch. The price is fixed shapes and fixed addresses: graphs are captured at
start-up for a grid of batch sizes (1, 2, 4, 8, then every 16, as nano-vllm) and block-table widths
(powers of two up to max_model_len), each reading the runner's persistent buffers and the attention
backend's capture buffers. A decode step of B sequences replays the smallest graph with at least B rows
and a wide enough table: the runner fills rows 0..B-1, the backend pads the rest into the dummy block.
Anything else (prefill, mixed batches, a table wider than any captured) runs the ordinary forward.

On a CPU (simulate=True) "capture" only records the buffers' metadata and "replay" runs the forward on
the same buffers: the data path of a graph without the graph, so the tests can check it anywhere.

Checked by: pytest -m ch6 -k graph; on the GPU by `minillm bench --chapter 6` (replay vs eager).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from minillm.runner import ModelRunner
from minillm.scheduler import ScheduledBatch

MAX_CAPTURE_KEYS = 1 << 20  # rows x table width: the torch attention gathers that many K/V per layer


def capture_batch_sizes(max_num_seqs: int) -> list[int]:
    """1, 2, 4, 8, then every 16 up to max_num_seqs (nano-vllm's choice; vLLM's is similar)."""
    sizes = [n for n in (1, 2, 4, 8) if n < max_num_seqs] + list(range(16, max_num_seqs, 16))
    return sorted(set(sizes + [max_num_seqs]))


def capture_widths(max_num_blocks: int, block_size: int, smallest_tokens: int = 256) -> list[int]:
    """Table widths in blocks: powers of two from smallest_tokens' worth up to max_num_blocks."""
    w = max(1, min(max_num_blocks, -(-smallest_tokens // block_size)))
    widths = []
    while w < max_num_blocks:
        widths.append(w)
        w *= 2
    return widths + [max_num_blocks]


@dataclass
class GraphStep:
    """What prepare() hands forward() for a replayed step."""

    key: tuple[int, int]  # (rows, table width in blocks) of the graph
    num_seqs: int  # the step's real rows


class CUDAGraphRunner(ModelRunner):
    """A ModelRunner whose decode-only steps replay captured graphs. attn_backend must implement
    GraphCaptureBackend (CapturablePagedAttention)."""

    def __init__(
        self,
        *args,
        batch_sizes: list[int] | None = None,
        widths: list[int] | None = None,
        max_capture_keys: int = MAX_CAPTURE_KEYS,
        simulate: bool | None = None,
        **kwargs,
    ):
        """args, kwargs: ModelRunner's. batch_sizes, widths: the capture grid (default: see above).
        simulate: no graph, the same buffers run eagerly (default: on any device but CUDA)."""
        super().__init__(*args, **kwargs)
        self.simulate = not str(self.device).startswith("cuda") if simulate is None else simulate
        self.batch_sizes = batch_sizes or capture_batch_sizes(self.max_num_seqs)
        self.widths = widths or capture_widths(self.max_num_blocks, self.block_size)
        self.max_capture_keys = max_capture_keys
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph | None, torch.Tensor | None]] = {}
        self.capture_s = 0.0
        self.num_replays = 0

    def capture(self) -> None:
        """Capture every (rows, width) pair within max_capture_keys, largest first so that the smaller
        graphs reuse the larger ones' memory pool."""
        t0 = time.perf_counter()
        # buffers made outside inference mode: every step updates them in place
        self.attn_backend.init_capture_graph(max(self.batch_sizes), max(self.widths))
        self.input_ids.zero_()
        self.positions.zero_()
        with torch.inference_mode():
            self._capture_all()
        if not self.simulate:
            torch.cuda.synchronize()
        self.capture_s = time.perf_counter() - t0

    def _capture_all(self) -> None:
        backend = self.attn_backend
        pool = None if self.simulate else torch.cuda.graph_pool_handle()
        for n in sorted(self.batch_sizes, reverse=True):
            for w in sorted(self.widths, reverse=True):
                if n * w * self.block_size > self.max_capture_keys and w != min(self.widths):
                    continue
                meta = backend.prepare_for_capture(n, w)
                if self.simulate:
                    self.graphs[(n, w)] = (None, None)
                    continue
                self._run(n, meta)  # warm-up: compilation and autotuning happen outside the capture
                torch.cuda.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool):
                    logits = self._run(n, meta)
                pool = graph.pool()
                self.graphs[(n, w)] = (graph, logits)

    def _run(self, n: int, meta) -> torch.Tensor:
        hidden = self.decode_forward(self.input_ids[:n], self.positions[:n], self.attn_backend, meta)
        return self.model.compute_logits(hidden)  # (n, V): every decode row samples

    def graph_for(self, batch: ScheduledBatch) -> tuple[int, int] | None:
        """The smallest captured graph that holds this batch, if it is decode-only."""
        if not self.graphs or any(n != 1 for n in batch.num_new_tokens):
            return None
        B = len(batch.seqs)
        need = max(max(len(s.block_table) for s in batch.seqs), 1)
        fits = [k for k in self.graphs if k[0] >= B and k[1] >= need]
        return min(fits) if fits else None

    def prepare(self, batch: ScheduledBatch, sample: list[int] | None = None):
        # A graph returns logits for every row; a one-token chunk in the middle of a prompt samples
        # nothing, so a step with such a row runs the ordinary forward, which picks the rows that sample.
        every_row_samples = sample is None or len(sample) == len(batch.seqs)
        key = self.graph_for(batch) if every_row_samples else None
        if key is None:
            return super().prepare(batch, sample)
        n, w = key
        B = len(batch.seqs)
        _, _, step, _ = self.fill(batch, sample)
        self.input_ids[B:n].zero_()  # padded rows: token 0 at position 0, into the dummy block
        self.positions[B:n].zero_()
        self.attn_backend.prepare_for_replay(step, n, w)
        return None, None, GraphStep(key, B), None

    def forward(self, input_ids, positions, meta, logits_indices) -> torch.Tensor:
        if not isinstance(meta, GraphStep):
            return super().forward(input_ids, positions, meta, logits_indices)
        self.num_replays += 1
        n, w = meta.key
        graph, logits = self.graphs[meta.key]
        if graph is None:  # simulated: the same buffers, run eagerly
            with torch.inference_mode():
                logits = self._run(n, self.attn_backend.prepare_for_capture(n, w))
        else:
            graph.replay()
        return logits[: meta.num_seqs]  # (B, V)
