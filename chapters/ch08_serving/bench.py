"""Chapter 8 benchmark: `minillm serve` for stages paged, radix and unified, each swept over request
rates by the serving client (Poisson arrivals, streamed /v1/completions, vLLM's metric names).

    python chapters/ch08_serving/bench.py --quick               # CPU, default model, well under a minute
    python chapters/ch08_serving/bench.py --device cuda --model qwen3-0.6b --load-format dummy

The same as `minillm bench --chapter 8 ...`; the benchmark lives in minillm/bench/ch08.py (the stage
sweep) and minillm/bench/serve.py (the client, `minillm bench serve`, which works against any
OpenAI-compatible server).
"""

import sys

from minillm.cli import main

if __name__ == "__main__":
    main(["bench", "--chapter", "8", *sys.argv[1:]])
