"""Chapter 6 benchmark: stage unified (eager) vs compiled vs compiled + CUDA graphs.

    python chapters/ch06_torch_compile/bench.py --quick               # CPU, default model
    python chapters/ch06_torch_compile/bench.py --device cuda --model qwen3-0.6b --load-format dummy

The same as `minillm bench --chapter 6 ...`; the benchmark lives in minillm/bench/ch06.py.
"""

import sys

from minillm.cli import main

if __name__ == "__main__":
    main(["bench", "--chapter", "6", *sys.argv[1:]])
