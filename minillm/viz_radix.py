"""Chapter 3 pictures: radix trees.

draw_radix_tree draws a RadixCache (minillm/kv/radix.py) top-down, root at the top: one box per node
with a snippet of its key, its token and block counts, lock_ref and last_access. Locked nodes (a running
request's path) are drawn in one color, evictable ones in another. A live cache changes under every
match, insert and eviction, so snapshot(cache) freezes it into plain tuples and dicts that the draw
functions accept as well; draw_radix_snapshots puts a sequence of them side by side.

Checked by: pytest -m ch3 tests/test_viz.py; used by chapters/ch03_radix_cache/ch03.ipynb (through
minillm/viz.py).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import Patch

LOCKED, EVICTABLE, ROOT = "#f0a868", "#9cc4e4", "#dddddd"
LEAF_IN, LEVEL_IN = 1.7, 0.75  # inches per leaf and per tree level: room for a box of three short lines


def snapshot(cache) -> dict:
    """A frozen copy of a RadixCache (or a RadixBlockManager's cache): nested dicts and tuples, children
    sorted by key, that later matches, inserts and evictions leave alone."""
    cache = getattr(cache, "cache", cache)

    def freeze(node) -> dict:
        return {
            "id": node.id,
            "key": tuple(node.key),
            "blocks": tuple(node.blocks),
            "lock_ref": node.lock_ref,
            "last_access": node.last_access,
            "children": tuple(freeze(node.children[k]) for k in sorted(node.children)),
        }

    return {
        "block_size": cache.block_size,
        "evictable_size": cache.evictable_size,
        "protected_size": cache.protected_size,
        "root": freeze(cache.root),
    }


def _frozen(tree) -> dict:
    return tree if isinstance(tree, dict) else snapshot(tree)


def _layout(root: dict) -> list[tuple[dict, dict | None, float, int]]:
    """(node, parent, x, depth) for every node: leaves at 0, 1, 2, ... in key order; a parent sits at
    the mean x of its children."""
    out, next_leaf = [], [0]

    def place(node, parent, depth) -> float:
        if node["children"]:
            x = sum(place(c, node, depth + 1) for c in node["children"]) / len(node["children"])
        else:
            x, next_leaf[0] = float(next_leaf[0]), next_leaf[0] + 1
        out.append((node, parent, x, depth))
        return x

    place(root, None, 0)
    return out


def _snippet(key: tuple[int, ...], tokenizer, max_chars: int) -> str:
    text = tokenizer.decode(list(key)) if tokenizer is not None else " ".join(map(str, key))
    text = text.replace("\n", "\u21b5").replace("$", r"\$")  # newlines drawn as arrows; no mathtext
    return text if len(text) <= max_chars else text[: max_chars - 1] + "\u2026"


def _extent(nodes) -> tuple[int, int]:
    """(leaves, depth) of a laid-out tree."""
    return sum(1 for n, *_ in nodes if not n["children"]), max(d for *_, d in nodes)


def draw_radix_tree(cache, ax=None, tokenizer=None, title=None, max_chars: int = 18, legend: bool = True):
    """Draw a RadixCache, RadixBlockManager or snapshot() top-down; returns the Figure.
    tokenizer: decode node keys to text (else token ids are shown); max_chars: snippet length."""
    tree = _frozen(cache)
    nodes = _layout(tree["root"])
    width, depth = _extent(nodes)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(3.0, LEAF_IN * width), 1.0 + LEVEL_IN * (depth + 1)))
    pos = {id(n): (x, -d) for n, _, x, d in nodes}
    for _, parent, x, d in nodes:
        if parent is not None:
            px, py = pos[id(parent)]
            ax.plot([px, x], [py, -d], color="#888", lw=1, zorder=1)
    for node, parent, x, d in nodes:
        if parent is None:
            label, color = "root", ROOT
        else:
            blocks = node["blocks"]
            shown = ",".join(map(str, blocks[:4])) + (",\u2026" if len(blocks) > 4 else "")
            label = (
                f"'{_snippet(node['key'], tokenizer, max_chars)}'\n"
                f"{len(node['key'])} tok, blocks {shown}\n"
                f"lock_ref={node['lock_ref']}  t={node['last_access']}"
            )
            color = LOCKED if node["lock_ref"] > 0 else EVICTABLE
        ax.text(
            x, -d, label, ha="center", va="center", fontsize=7, family="monospace", zorder=2,
            bbox=dict(boxstyle="round,pad=0.3", facecolor=color, edgecolor="#555"),
        )  # fmt: skip
    ax.set(xlim=(-0.6, width - 0.4), ylim=(-depth - 0.6, 0.5), xticks=[], yticks=[])
    ax.spines[:].set_visible(False)
    sizes = f"evictable_size={tree['evictable_size']}  protected_size={tree['protected_size']} (blocks)"
    ax.set_xlabel(sizes, fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    if legend:
        handles = [
            Patch(color=LOCKED, label="locked (lock_ref > 0)"),
            Patch(color=EVICTABLE, label="evictable"),
        ]
        ax.legend(handles=handles, fontsize=7, loc="upper right", frameon=False)
    return ax.figure


def draw_radix_snapshots(snapshots, tokenizer=None, ncols: int = 3, max_chars: int = 18):
    """Draw [(title, cache or snapshot), ...] in a grid, ncols per row, all at one scale; returns the
    Figure. Pass snapshot(cache) for each moment: a live cache would show its final state every time."""
    snapshots = [(title, _frozen(tree)) for title, tree in snapshots]
    ncols = max(1, min(ncols, len(snapshots)))
    nrows = -(-len(snapshots) // ncols)
    extents = [_extent(_layout(tree["root"])) for _, tree in snapshots]
    width = max(w for w, _ in extents)
    row_depth = [max(d for _, d in extents[r * ncols : (r + 1) * ncols]) for r in range(nrows)]
    heights = [1.2 + LEVEL_IN * (d + 1) for d in row_depth]
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(ncols * max(3.0, LEAF_IN * width), sum(heights)),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for i, ax in enumerate(axes.flat):
        if i >= len(snapshots):
            ax.set_visible(False)
            continue
        title, tree = snapshots[i]
        draw_radix_tree(tree, ax=ax, tokenizer=tokenizer, title=title, max_chars=max_chars, legend=i == 0)
        center = (extents[i][0] - 1) / 2  # the same units per leaf and per level in every panel of a row
        ax.set(
            xlim=(center - width / 2 - 0.1, center + width / 2 + 0.1),
            ylim=(-row_depth[i // ncols] - 0.6, 0.5),
        )
    fig.tight_layout()
    return fig
