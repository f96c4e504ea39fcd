"""Chapter 5 benchmark: constrained decoding three ways (naive vocabulary walk, Outlines' token index,
SGLang's compressed FSM with jump-forward) and an unconstrained baseline, on JSON Schema workloads;
optional peers (outlines-core, xgrammar, llguidance) when installed: pip install -e '.[peers]'.

    python chapters/ch05_compressed_fsm/bench.py --quick               # CPU, default model
    python chapters/ch05_compressed_fsm/bench.py --device cuda --model qwen3-0.6b --load-format dummy

The same as `minillm bench --chapter 5 ...`; the benchmark lives in minillm/bench/ch05.py.
"""

import sys

from minillm.cli import main

if __name__ == "__main__":
    main(["bench", "--chapter", "5", *sys.argv[1:]])
