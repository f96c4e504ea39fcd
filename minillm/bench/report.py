"""Benchmark output: a JSON record (device, versions, configs, workload, per-request metrics,
aggregates), a markdown table, and matplotlib plots, all in one folder per run."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch


def environment(device: str) -> dict:
    import transformers

    import minillm

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                cwd=Path(minillm.__file__).parent,
                timeout=5,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": device,
        "device_name": name,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "triton": _version("triton"),
        "cuda": torch.version.cuda,
        "minillm_commit": commit,
    }


def _version(package: str) -> str | None:
    """An installed package's version, without importing it (importing Triton early has side effects)."""
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def markdown_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """columns: (key, header, format spec)."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = []
    for r in rows:
        cells = []
        for key, _, fmt in columns:
            v = r.get(key)
            cells.append("-" if v is None else format(v, fmt) if fmt else str(v))
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *body])


def _jsonable(x):
    if dataclasses.is_dataclass(x):
        return dataclasses.asdict(x)
    if isinstance(x, Path):
        return str(x)
    raise TypeError(type(x).__name__)


def title(chapter: int, env: dict, dtype, model: str, load_format: str) -> str:
    """First line of every result: chapter, device, dtype, model, versions."""
    dummy = " (dummy weights)" if load_format == "dummy" else ""
    return (
        f"Chapter {chapter} on {env['device_name']} ({env['device']}, {dtype}), model {model}{dummy}; "
        f"torch {env['torch']}, transformers {env['transformers']}."
    )


def publish(out_dir: str | Path, chapter: int, payload: dict, header: str, table: str) -> Path:
    """Write chNN.json (everything) and chNN.md (header + table), print them; returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = f"ch{chapter:02d}"
    (out / f"{name}.json").write_text(
        json.dumps({"chapter": chapter, **payload}, indent=1, default=_jsonable)
    )
    (out / f"{name}.md").write_text(header + "\n\n" + table + "\n")
    print(header + "\n\n" + table)
    return out


def pyplot():
    """matplotlib.pyplot on the Agg backend: benchmarks write PNG files and never open a window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, title: str) -> None:
    """Title the figure with the result's first line, write it to path and free it."""
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
