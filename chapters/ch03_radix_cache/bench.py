"""Chapter 3 benchmark: no prefix cache vs vLLM's block hashes vs SGLang's radix tree (FCFS and LPM).

    python chapters/ch03_radix_cache/bench.py --quick               # CPU, default model
    python chapters/ch03_radix_cache/bench.py --device cuda --model qwen3-0.6b --load-format dummy

The same as `minillm bench --chapter 3 ...`; the benchmark lives in minillm/bench/ch03.py.
"""

import sys

from minillm.cli import main

if __name__ == "__main__":
    main(["bench", "--chapter", "3", *sys.argv[1:]])
