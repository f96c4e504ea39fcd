"""Chapter 7 benchmark: the Triton kernels against PyTorch's attention, then stage triton end to end.

    python chapters/ch07_triton_flash_attention/bench.py --quick       # CPU: kernels vs float64, triton vs unified
    python chapters/ch07_triton_flash_attention/bench.py --device cuda --model qwen3-0.6b --load-format dummy

The same as `minillm bench --chapter 7 ...`; the benchmark lives in minillm/bench/ch07.py.
"""

import sys

from minillm.cli import main

if __name__ == "__main__":
    main(["bench", "--chapter", "7", *sys.argv[1:]])
