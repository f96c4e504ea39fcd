"""Chapter 9: SGLang's frontend over minillm's engine: programs of gen / select / fork calls whose
shared text the radix cache (chapter 3) turns into cached tokens.

    import minillm.lang as ml
    @ml.function
    def f(s, topic): ...
    f.run(topic="...", backend=ml.Runtime(llm));  f.run_batch([...], backend=ml.Endpoint(url))

Checked by: pytest -m ch9.
"""

from minillm.lang.endpoint import Endpoint
from minillm.lang.interpreter import ProgramState, SglFunction, function, set_default_backend
from minillm.lang.ir import gen, greedy_token_selection, select, token_length_normalized
from minillm.lang.runtime import Runtime

__all__ = [
    "Endpoint",
    "ProgramState",
    "Runtime",
    "SglFunction",
    "function",
    "gen",
    "greedy_token_selection",
    "select",
    "set_default_backend",
    "token_length_normalized",
]
