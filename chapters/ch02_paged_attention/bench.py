"""Chapter 2 benchmark: stage naive vs stage paged under the same KV memory budget.

    python chapters/ch02_paged_attention/bench.py --quick               # CPU, default model
    python chapters/ch02_paged_attention/bench.py --device cuda --model qwen3-0.6b --load-format dummy

The same as `minillm bench --chapter 2 ...`; the benchmark lives in minillm/bench/ch02.py.
"""

import sys

from minillm.cli import main

if __name__ == "__main__":
    main(["bench", "--chapter", "2", *sys.argv[1:]])
