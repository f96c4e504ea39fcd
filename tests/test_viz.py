"""Chapter 3 pictures: the radix tree drawing has one box per node, locked and evictable nodes differ in
color, and a snapshot does not follow later changes to the cache.

Chapter 5 pictures (marked ch5 too): byte sets read as character classes; a DFA and its compressed FSM
are drawn with one circle per state (two for an accepting one) and one label per edge."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from minillm.constrained.guide import compress  # noqa: E402
from minillm.constrained.regex import compile_regex  # noqa: E402
from minillm.kv.paged import BlockAllocator  # noqa: E402
from minillm.kv.radix import RadixCache  # noqa: E402
from minillm.viz import (  # noqa: E402
    EVICTABLE,
    FORCED,
    LOCKED,
    byte_class_label,
    draw_compressed_fsm,
    draw_fsm,
    draw_radix_snapshots,
    draw_radix_tree,
    forced_text_label,
    snapshot,
)

pytestmark = pytest.mark.ch3


def small_tree():
    """root -> [1 2 3 4] -> {[5 6], [7 8 9 9]}, and root -> [3 3]; block_size 2. The [7 8 9 9] branch is
    locked (a running request), the rest evictable."""
    alloc = BlockAllocator(16)
    cache = RadixCache(2, alloc)
    for tokens in ([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 7, 8, 9, 9], [3, 3]):
        blocks = [alloc.allocate() for _ in range(len(tokens) // 2)]
        cache.insert(tokens, blocks)
        for b in blocks:
            alloc.free(b)  # only the tree holds them now
    _, node = cache.match_prefix([1, 2, 3, 4, 7, 8, 9, 9])
    cache.lock(node)
    return cache, node


def boxes(ax):
    return [t for t in ax.texts if t.get_bbox_patch() is not None]


def test_one_box_per_node_and_lock_colors():
    cache, _ = small_tree()
    fig = draw_radix_tree(cache, title="small")
    ax = fig.axes[0]
    labels = boxes(ax)
    assert len(labels) == 5  # root + 4 nodes: the [1 2 3 4] prefix was split off by the second insert
    assert sum(t.get_text() == "root" for t in labels) == 1
    assert sum("lock_ref=1" in t.get_text() for t in labels) == 2  # [1 2 3 4] and [7 8 9 9]
    colors = {
        t.get_text().split("\n")[0]: matplotlib.colors.to_hex(t.get_bbox_patch().get_facecolor())
        for t in labels
    }
    assert colors["'7 8 9 9'"] == LOCKED and colors["'5 6'"] == EVICTABLE and LOCKED != EVICTABLE
    assert len(ax.lines) == 4  # one edge per non-root node
    plt.close(fig)


def test_snapshot_is_independent_of_later_changes():
    cache, node = small_tree()
    before = snapshot(cache)
    assert before["protected_size"] == 4 and before["evictable_size"] == 2
    cache.unlock(node)
    cache.evict(10)
    assert cache.total_size == 0
    assert before["protected_size"] == 4 and len(before["root"]["children"]) == 2  # unchanged
    fig = draw_radix_snapshots([("before", before), ("after", snapshot(cache))], ncols=2)
    assert [len(boxes(ax)) for ax in fig.axes if ax.get_visible()] == [5, 1]
    plt.close(fig)


def test_token_snippets_decode_and_truncate():
    class Chars:  # a stand-in tokenizer: token id -> a letter
        def decode(self, ids):
            return "".join(chr(ord("a") + i) for i in ids)

    cache, _ = small_tree()
    fig = draw_radix_tree(cache, tokenizer=Chars(), max_chars=3)
    first_lines = {t.get_text().split("\n")[0] for t in boxes(fig.axes[0])}
    assert first_lines == {"root", "'bc\u2026'", "'fg'", "'hi\u2026'", "'dd'"}
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------
# Chapter 5: automata
# ---------------------------------------------------------------------------------------------------


def edge_labels(ax) -> list[tuple[str, ...]]:
    """Each edge label as its text pieces: (class,) for a DFA edge, (class, forced text) for a
    compressed edge that forces text."""
    out = [(t.get_text(),) for t in ax.texts if t.get_gid() == "edge"]
    for box in ax.artists:
        if box.get_gid() == "edge":
            out.append(tuple(part.get_text() for part in box.offsetbox.get_children()))
    return sorted(out)


def state_circles(ax):
    from matplotlib.patches import Circle

    return [p for p in ax.patches if isinstance(p, Circle)]


def arrows(ax):
    from matplotlib.patches import FancyArrowPatch

    return [p for p in ax.patches if isinstance(p, FancyArrowPatch)]


@pytest.mark.ch5
@pytest.mark.parametrize(
    "byte_set, label",
    [
        ({ord("a")}, "a"),
        ({ord("a"), ord("b")}, "[ab]"),
        (range(ord("0"), ord("9") + 1), "[0-9]"),
        (range(ord("a"), ord("z") + 1), "[a-z]"),
        ({*range(ord("0"), ord("9") + 1), ord("_"), *range(ord("a"), ord("z") + 1)}, "[0-9_a-z]"),
        (set(range(256)) - {ord('"')}, '[^"]'),  # the complement reads shorter
        (set(range(256)) - {ord('"'), ord("\\")}, '[^"\\\\]'),
        (range(0x80), "[\\x00-\\x7f]"),  # a tie: the set itself
        ({ord("-"), ord("]"), ord("^")}, "[\\-\\]\\^]"),  # escaped inside a class
        ({0x0A}, "\\x0a"),
        ({0xC3}, "\\xc3"),  # the lead byte of a two-byte character
        ({ord(" ")}, "\u2423"),  # a space is drawn as an open box
        (set(), "\u2205"),
    ],
)
def test_byte_class_label(byte_set, label):
    assert byte_class_label(byte_set) == label


@pytest.mark.ch5
def test_labels_are_cut_at_max_label():
    assert byte_class_label(range(0x80, 0xC0)) == "[\\x80-\\xbf]"
    assert byte_class_label(range(0x80, 0xC0), max_label=6) == "[\\x80\u2026"
    assert forced_text_label(b'{"name": "') == '{"name":\u2423"'
    assert forced_text_label(b'{"name": "', max_label=4) == '{"n\u2026'


@pytest.mark.ch5
def test_draw_fsm_one_circle_per_state_one_label_per_edge():
    dfa = compile_regex("(ab|cd)e*")
    assert dfa.num_states == 4 and len(dfa.accepting) == 1
    ax = draw_fsm(dfa, title="(ab|cd)e*")
    assert len(state_circles(ax)) == dfa.num_states + len(dfa.accepting)  # accepting: a double circle
    assert sorted(t.get_text() for t in ax.texts if t.get_gid() == "state") == ["0", "1", "2", "3"]
    assert edge_labels(ax) == [("a",), ("b",), ("c",), ("d",), ("e",)]  # e: the self-loop
    assert len(arrows(ax)) == 5 + 1  # the edges and the arrow into the initial state
    assert ax.get_title() == "(ab|cd)e*"
    plt.close(ax.figure)


@pytest.mark.ch5
def test_draw_fsm_groups_bytes_per_target_and_lays_a_chain_out_in_one_row():
    dfa = compile_regex("x[0-9]{2}")  # x, then two digits: one edge [0-9] per step, not ten
    ax = draw_fsm(dfa)
    assert edge_labels(ax) == [("[0-9]",), ("[0-9]",), ("x",)]
    centers = [c.center for c in state_circles(ax)]
    assert len({y for _, y in centers}) == 1  # a chain is one row...
    xs = [x for x, _ in centers]
    assert xs == sorted(xs) and len(set(xs)) == dfa.num_states  # ...left to right, one column each
    plt.close(ax.figure)


@pytest.mark.ch5
def test_draw_compressed_fsm_shows_first_bytes_then_forced_text():
    compressed = compress(compile_regex("(ab|cd)e*"))
    assert compressed.num_states == 2  # 1 and 2 had one way on each: merged into the edges
    fig, ax = plt.subplots()
    assert draw_compressed_fsm(compressed, ax=ax, title="compressed") is ax
    assert len(state_circles(ax)) == 2 + 1
    assert edge_labels(ax) == [("a", "b"), ("c", "d"), ("e",)]
    assert len(arrows(ax)) == 3 + 1  # two parallel edges 0 -> 3, the self-loop, the start arrow
    forced_colors = {
        matplotlib.colors.to_hex(part.get_children()[0].get_color())
        for box in ax.artists
        for part in box.offsetbox.get_children()[1:]
    }
    assert forced_colors == {FORCED}
    plt.close(fig)


@pytest.mark.ch5
def test_draw_compressed_card():
    pattern = r'\{"name": "[a-z]{1,8}", "age": [0-9]{1,2}\}'
    dfa = compile_regex(pattern)
    compressed = compress(dfa)
    ax = draw_compressed_fsm(compressed, title=pattern)
    assert len(state_circles(ax)) == compressed.num_states + 1 < dfa.num_states
    labels = edge_labels(ax)
    assert ("{", '"name":\u2423"') in labels  # the opening brace and the whole forced key
    assert sum(len(out) for out in compressed.edges.values()) == len(labels)
    plt.close(ax.figure)
