"""Chapter 0 benchmark: minillm's decoder against transformers' on one prefill forward (time, logits error).

    python chapters/ch00_model/bench.py --quick                       # CPU, default model, seconds
    python chapters/ch00_model/bench.py --device cuda --model qwen3-0.6b --load-format dummy

The same as `minillm bench --chapter 0 ...`; the benchmark lives in minillm/bench/ch00.py.
"""

import sys

from minillm.cli import main

if __name__ == "__main__":
    main(["bench", "--chapter", "0", *sys.argv[1:]])
