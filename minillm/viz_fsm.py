"""Chapter 5 pictures: automata.

draw_fsm draws a small byte-level DFA (minillm/constrained/regex.py) left to right, a state's column
being its longest path from the initial state (edges that close a cycle aside), so a forced chain is a
straight row: a circle per state (double for accepting ones, an arrow into the initial one) and one
edge per (source, target) pair, labelled with its bytes as a character class (byte_class_label).
draw_compressed_fsm draws a CompressedFSM (minillm/constrained/guide.py) the same way; an edge's label
is the class of its first bytes followed by its forced text, drawn bold in another color.

Checked by: pytest -m ch5 tests/test_viz.py; used by chapters/ch05_compressed_fsm/ch05.ipynb (through
minillm/viz.py).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.offsetbox import AnnotationBbox, HPacker, TextArea
from matplotlib.patches import Circle, FancyArrowPatch

STATE, ACCEPTING, FORCED = "#e8eef6", "#cfe8cf", "#c0392b"
FSM_UNIT_IN = 0.42  # inches per layout unit: adjacent rows are one unit apart
_RADIUS = 0.25  # state circles, in layout units
_CHAR_W = 0.6 * 7 / 72 / FSM_UNIT_IN  # one character of a 7-pt monospace label, in layout units
_LOOP = 2.2  # arc3 curvature of a self-loop: its height in radii, roughly
_FONT = dict(fontsize=7, family="monospace", parse_math=False)


def _byte_char(b: int, in_class: bool) -> str:
    """One byte as a label character: printable ASCII as itself (`\\ ] ^ -` escaped inside a class),
    a space as a visible open box, anything else as \\xNN."""
    if b == 0x20:
        return "\u2423"
    if 0x21 <= b <= 0x7E:
        c = chr(b)
        return "\\" + c if in_class and c in "\\]^-" else c
    return f"\\x{b:02x}"


def _class_body(sorted_bytes: list[int]) -> str:
    """Runs of consecutive bytes: one or two as themselves, three or more as first-last."""
    out, i = [], 0
    while i < len(sorted_bytes):
        j = i
        while j + 1 < len(sorted_bytes) and sorted_bytes[j + 1] == sorted_bytes[j] + 1:
            j += 1
        lo, hi = sorted_bytes[i], sorted_bytes[j]
        if hi - lo >= 2:
            out.append(f"{_byte_char(lo, True)}-{_byte_char(hi, True)}")
        else:
            out.extend(_byte_char(b, True) for b in range(lo, hi + 1))
        i = j + 1
    return "".join(out)


def _truncate(text: str, max_len: int | None) -> str:
    return text if max_len is None or len(text) <= max_len else text[: max(1, max_len - 1)] + "\u2026"


def byte_class_label(byte_set, max_label: int | None = None) -> str:
    """A set of bytes as a short character class: `a`, `[0-9]`, `[_a-z]`, `[^"]` (whichever of the set
    and its complement reads shorter), `\\xc3` for a byte outside printable ASCII, a space as an open box.
    Longer than max_label characters: cut, ending in an ellipsis."""
    chosen = sorted(set(byte_set))
    if not chosen:
        return "\u2205"
    if len(chosen) == 1:
        return _truncate(_byte_char(chosen[0], False), max_label)
    label = f"[{_class_body(chosen)}]"
    rest = sorted(set(range(256)) - set(chosen))
    if rest:
        negated = f"[^{_class_body(rest)}]"
        label = negated if len(negated) < len(label) else label
    return _truncate(label, max_label)


def forced_text_label(data: bytes, max_label: int | None = None) -> str:
    """Forced bytes as text: printable ASCII as itself, a space as an open box, other bytes as \\xNN."""
    return _truncate("".join(_byte_char(b, False) for b in data), max_label)


def _fsm_layout(initial: int, states, succ: dict[int, list[int]]) -> dict[int, tuple[int, float]]:
    """(column, y) per state, left to right. Depth-first search from initial marks back edges (those
    closing a cycle); on what is left, a state's column is its longest path from initial, so a forced
    chain is one row and every edge but a back edge points right. Within a column, states are ordered
    by the mean height of their placed predecessors (then the order the search found them), one unit
    apart around 0."""
    color: dict[int, int] = {initial: 1}  # 1: on the DFS stack, 2: done
    finished, discovered = [], [initial]
    back: set[tuple[int, int]] = set()
    stack = [(initial, iter(succ.get(initial, [])))]
    while stack:
        s, it = stack[-1]
        t = next(it, None)
        if t is None:
            color[s] = 2
            finished.append(s)
            stack.pop()
        elif t != s and t not in color:
            color[t] = 1
            discovered.append(t)
            stack.append((t, iter(succ.get(t, []))))
        elif t != s and color[t] == 1:
            back.add((s, t))
    unreachable = [s for s in sorted(states) if s not in color]  # none in a trimmed DFA
    topo, discovered = finished[::-1] + unreachable, discovered + unreachable
    preds: dict[int, list[int]] = {}
    depth = {s: 0 for s in topo}
    for s in topo:
        for t in succ.get(s, []):
            if t != s and (s, t) not in back:
                depth[t] = max(depth[t], depth[s] + 1)
                preds.setdefault(t, []).append(s)
    columns: dict[int, list[int]] = {}
    for s in discovered:
        columns.setdefault(depth[s], []).append(s)
    ys: dict[int, float] = {}
    for d in sorted(columns):
        rank = {s: i for i, s in enumerate(columns[d])}

        def height(s: int) -> float:
            placed = [ys[p] for p in preds.get(s, []) if p in ys]
            return sum(placed) / len(placed) if placed else 0.0

        col = sorted(columns[d], key=lambda s: (-height(s), rank[s]))
        for i, s in enumerate(col):
            ys[s] = (len(col) - 1) / 2 - i
    return {s: (depth[s], ys[s]) for s in topo}


def _draw_automaton(ax, initial, accepting, states, edges, title, forced_color):
    """edges: [(source, target, first label, forced label)]; forced_color None: plain text labels
    (a DFA), else first label + forced label in that color, bold (a compressed FSM). An edge to the
    next column is straight (curved when it has parallel edges), its label in the gap, which is widened
    to fit; a longer edge arcs over the states between, higher the more columns it spans; an edge
    back to the left arcs below; a self-loop sits on the state's outer side."""
    succ: dict[int, list[int]] = {}
    for s, t, *_ in edges:
        if t not in succ.setdefault(s, []):
            succ[s].append(t)
    layout = _fsm_layout(initial, states, succ)
    ncols = max(c for c, _ in layout.values()) + 1
    gaps = [1.1] * ncols  # the width from column c to column c + 1
    for s, t, a, b in edges:
        c = layout[s][0]
        if layout[t][0] == c + 1:
            gaps[c] = max(gaps[c], 2 * _RADIUS + 0.3 + _CHAR_W * (len(a) + len(b)))
    col_x = [sum(gaps[:c]) for c in range(ncols)]
    pos = {s: (col_x[c], y) for s, (c, y) in layout.items()}
    center = sum(y for _, y in pos.values()) / len(pos)
    created = ax is None
    if created:
        _, ax = plt.subplots()
    points = []  # everything drawn must fit the axes
    circles = {}
    for s, (x, y) in pos.items():
        acc = s in accepting
        face = ACCEPTING if acc else STATE
        circles[s] = Circle((x, y), _RADIUS, facecolor=face, edgecolor="#333", lw=1, zorder=3)
        ax.add_patch(circles[s])
        if acc:
            ax.add_patch(Circle((x, y), 0.78 * _RADIUS, facecolor="none", edgecolor="#333", lw=1, zorder=3))
        ax.text(x, y, str(s), ha="center", va="center", zorder=4, gid="state", fontsize=6.5)
        points += [(x - _RADIUS, y - _RADIUS), (x + _RADIUS, y + _RADIUS)]
    x0, y0 = pos[initial]
    ax.add_patch(
        FancyArrowPatch((x0 - 0.8, y0), (x0, y0), patchB=circles[initial], shrinkA=0, shrinkB=0,
                        arrowstyle="-|>", mutation_scale=9, color="#333", lw=1, gid="start")
    )  # fmt: skip
    points.append((x0 - 0.85, y0))

    def put_label(x, y, first, forced):
        width = _CHAR_W * (len(first) + len(forced)) / 2 + 0.05
        points.extend([(x - width, y - 0.15), (x + width, y + 0.15)])
        bbox = dict(boxstyle="round,pad=0.1", facecolor="white", edgecolor="none", alpha=0.85)
        if forced_color is None:
            ax.text(x, y, first, ha="center", va="center", zorder=5, gid="edge", bbox=bbox, **_FONT)
            return
        parts = [TextArea(first, textprops=dict(color="black", **_FONT))]
        if forced:
            parts.append(TextArea(forced, textprops=dict(color=forced_color, fontweight="bold", **_FONT)))
        box = AnnotationBbox(HPacker(children=parts, pad=0, sep=0), (x, y), frameon=True, pad=0.1,
                             bboxprops=bbox, zorder=5, box_alignment=(0.5, 0.5))  # fmt: skip
        box.set_gid("edge")
        ax.add_artist(box)

    arrow = dict(arrowstyle="-|>", mutation_scale=8, color="#555", lw=0.9, zorder=2, shrinkA=0, shrinkB=0)
    pairs: dict[tuple[int, int], list[int]] = {}
    for i, (s, t, *_) in enumerate(edges):
        if s != t:
            pairs.setdefault((min(s, t), max(s, t)), []).append(i)
    for i, (s, t, first, forced) in enumerate(edges):
        x, y = pos[s]
        outer = 1 if y >= center else -1
        if s == t:  # a small loop on the state's outer side
            a = (x + _RADIUS * 0.5, y + outer * _RADIUS * 0.87)
            b = (x - _RADIUS * 0.5, y + outer * _RADIUS * 0.87)
            ax.add_patch(FancyArrowPatch(a, b, connectionstyle=f"arc3,rad={outer * _LOOP}", **arrow))
            top = y + outer * (_RADIUS * 0.87 + 0.5 * _LOOP * _RADIUS)
            put_label(x, top + outer * 0.17, first, forced)
            continue
        tx, ty = pos[t]
        ddx, ddy = tx - x, ty - y
        chord = (ddx * ddx + ddy * ddy) ** 0.5
        group = pairs[(min(s, t), max(s, t))]
        offset = (group.index(i) - (len(group) - 1) / 2) * 0.5  # parallel edges fan out
        rad = offset if s < t else -offset  # arc3 bends relative to the direction of travel
        span = layout[t][0] - layout[s][0]
        if span != 1:  # arc over (forward) or under (back) the states between, higher when longer
            bulge = 0.3 + 0.3 * max(abs(span) - 1, 0)
            side = outer if span > 0 else -outer
            if ddx == 0:
                rad += 2 * bulge / chord * (1 if ddy > 0 else -1)  # same column: bend to the right
            else:
                rad += 2 * bulge / chord * (-side if ddx > 0 else side)
        patch = FancyArrowPatch((x, y), (tx, ty), patchA=circles[s], patchB=circles[t],
                                connectionstyle=f"arc3,rad={rad}", **arrow)  # fmt: skip
        ax.add_patch(patch)
        put_label((x + tx) / 2 + 0.5 * rad * ddy, (y + ty) / 2 - 0.5 * rad * ddx, first, forced)

    px, py = zip(*points)
    xlim, ylim = (min(px) - 0.15, max(px) + 0.15), (min(py) - 0.15, max(py) + 0.15)
    ax.set(xlim=xlim, ylim=ylim)
    ax.set_aspect("equal")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9, parse_math=False)
    if created:
        width, height = FSM_UNIT_IN * (xlim[1] - xlim[0]), FSM_UNIT_IN * (ylim[1] - ylim[0])
        fig_w, fig_h = max(2.0, width + 0.2), height + (0.45 if title else 0.2)
        ax.figure.set_size_inches(fig_w, fig_h)
        margin = (fig_w - width) / 2 / fig_w
        ax.figure.subplots_adjust(
            left=margin, right=1 - margin, bottom=0.1 / fig_h, top=(0.1 + height) / fig_h
        )
    return ax


def draw_fsm(dfa, ax=None, title=None, max_label: int = 12):
    """Draw a small DFA (minillm.constrained.regex.DFA; up to ~30 states) left to right; returns the
    axes. One edge per (source, target), labelled with byte_class_label of its bytes; accepting states
    are double circles and an arrow points at the initial state."""
    edges = []
    for s, moves in enumerate(dfa.transitions):
        by_target: dict[int, set[int]] = {}
        for b, t in sorted(moves.items()):
            by_target.setdefault(t, set()).add(b)
        edges += [(s, t, byte_class_label(bs, max_label), "") for t, bs in by_target.items()]
    return _draw_automaton(ax, dfa.initial, dfa.accepting, range(dfa.num_states), edges, title, None)


def draw_compressed_fsm(cfsm, ax=None, title=None, max_label: int = 16):
    """Draw a CompressedFSM (minillm.constrained.guide.compress) like draw_fsm; returns the axes. Each
    edge reads: the class of bytes that take it, then (bold, colored) the text forced after them; the
    whole label is cut at max_label characters."""
    edges = []
    for s, out in cfsm.edges.items():
        for first, forced, t in out:
            a = byte_class_label(first, max_label)
            b = forced_text_label(forced, max(1, max_label - len(a))) if forced else ""
            edges.append((s, t, a, b))
    return _draw_automaton(ax, cfsm.initial, cfsm.accepting, list(cfsm.edges), edges, title, FORCED)
