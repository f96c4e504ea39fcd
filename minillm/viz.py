"""Pictures for the chapters, one import for the notebooks: radix trees (chapter 3, minillm/viz_radix.py)
and automata (chapter 5, minillm/viz_fsm.py); block tables and scheduler timelines are drawn in their
chapters' notebooks.

Checked by: pytest -m ch3 tests/test_viz.py (radix trees), pytest -m ch5 tests/test_viz.py (automata);
used by chapters/ch03_radix_cache/ch03.ipynb and chapters/ch05_compressed_fsm/ch05.ipynb.
"""

from minillm.viz_fsm import (
    ACCEPTING,
    FORCED,
    FSM_UNIT_IN,
    STATE,
    byte_class_label,
    draw_compressed_fsm,
    draw_fsm,
    forced_text_label,
)
from minillm.viz_radix import (
    EVICTABLE,
    LEAF_IN,
    LEVEL_IN,
    LOCKED,
    ROOT,
    draw_radix_snapshots,
    draw_radix_tree,
    snapshot,
)

__all__ = [
    "ACCEPTING",
    "EVICTABLE",
    "FORCED",
    "FSM_UNIT_IN",
    "LEAF_IN",
    "LEVEL_IN",
    "LOCKED",
    "ROOT",
    "STATE",
    "byte_class_label",
    "draw_compressed_fsm",
    "draw_fsm",
    "draw_radix_snapshots",
    "draw_radix_tree",
    "forced_text_label",
    "snapshot",
]
