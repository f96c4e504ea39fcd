"""Chapter 1 benchmark: no KV cache vs stage naive (contiguous KV cache) vs transformers' generate.

    python chapters/ch01_naive_decode/bench.py --quick                 # CPU, default model, seconds
    python chapters/ch01_naive_decode/bench.py --device cuda --model qwen3-0.6b --load-format dummy

The same as `minillm bench --chapter 1 ...`; the benchmark itself lives in minillm/bench/ch01.py.
"""

import sys

from minillm.cli import main

if __name__ == "__main__":
    main(["bench", "--chapter", "1", *sys.argv[1:]])
