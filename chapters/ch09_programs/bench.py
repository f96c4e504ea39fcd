"""Chapter 9 benchmark: four programs (few-shot select, multi-turn chat, tree of thought with fork,
JSON extraction) run with run_batch, on an engine without a prefix cache and on one with the radix
cache; programs/s, cached-token ratio, forward passes, tokens fed.

    python chapters/ch09_programs/bench.py --quick               # CPU, default model, well under a minute
    python chapters/ch09_programs/bench.py --device cuda --model qwen3-0.6b --load-format dummy

The same as `minillm bench --chapter 9 ...`; the benchmark lives in minillm/bench/ch09.py.
"""

import sys

from minillm.cli import main

if __name__ == "__main__":
    main(["bench", "--chapter", "9", *sys.argv[1:]])
