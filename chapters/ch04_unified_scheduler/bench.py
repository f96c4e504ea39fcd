"""Chapter 4 benchmark: prefill first (stage radix) vs one token budget per step (stage unified) under
steady decode traffic with long prompts arriving periodically.

    python chapters/ch04_unified_scheduler/bench.py --quick               # CPU, default model
    python chapters/ch04_unified_scheduler/bench.py --device cuda --model qwen3-0.6b --load-format dummy

The same as `minillm bench --chapter 4 ...`; the benchmark lives in minillm/bench/ch04.py.
"""

import sys

from minillm.cli import main

if __name__ == "__main__":
    main(["bench", "--chapter", "4", *sys.argv[1:]])
