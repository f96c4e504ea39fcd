"""Chapter 3 pictures: the radix tree drawing has one box per node, locked and evictable nodes differ in
color, and a snapshot does not follow later changes to the cache."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from minillm.kv.paged import BlockAllocator  # noqa: E402
from minillm.kv.radix import RadixCache  # noqa: E402
from minillm.viz import EVICTABLE, LOCKED, draw_radix_snapshots, draw_radix_tree, snapshot  # noqa: E402

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
