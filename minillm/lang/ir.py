"""Chapter 9: the pieces a program appends to its state: gen and select (SGLang's names), and the
rules select uses to pick a choice from the model's logprobs of each choice's tokens.

    s += "Q: 2 + 2 = ?\nA:" + ml.gen("answer", max_tokens=8, stop="\n")
    s += "Is it right?" + ml.select("verdict", choices=[" yes", " no"])

A gen with choices= is a select, as in SGLang. Arguments are checked here, when the program builds
the call, so a bad one raises ValueError naming the field before anything runs.

Checked by: pytest -m ch9.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from minillm.request import SamplingParams


class _Piece:
    """Something a program appends; `"text" + gen(...)` builds a Concat (SGLang's expression `+`)."""

    def __add__(self, other):
        return Concat([self, other])

    def __radd__(self, other):
        return Concat([other, self])


@dataclass
class Gen(_Piece):
    name: str | None
    params: SamplingParams  # what the engine runs; stop strings end the captured text before them


@dataclass
class Select(_Piece):
    name: str | None
    choices: list[str]
    choices_method: str = "token_length_normalized"


@dataclass
class Concat:
    parts: list = field(default_factory=list)

    def __add__(self, other):
        return Concat(self.parts + [other])

    def __radd__(self, other):
        return Concat([other] + self.parts)


def _check_name(name) -> None:
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"name must be None or a non-empty string, got {name!r}")


def gen(
    name: str | None = None,
    max_tokens: int = 128,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    stop: str | list[str] | None = None,
    regex: str | None = None,
    json_schema: dict | str | None = None,
    choices: list[str] | None = None,
    seed: int | None = None,
    ignore_eos: bool = False,
):
    """Generate text and capture it as state[name]. Greedy by default (SGLang's frontend default is
    also deterministic: temperature 0). choices= makes it a select."""
    _check_name(name)
    if choices is not None:
        return select(name, choices)
    params = SamplingParams(
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        max_tokens=max_tokens,
        stop=stop,
        regex=regex,
        json_schema=json_schema,
        seed=seed,
        ignore_eos=ignore_eos,
    )
    return Gen(name, params)


def select(
    name: str | None = None,
    choices: list[str] | None = None,
    *,
    choices_method: str = "token_length_normalized",
):
    """Append the choice the model finds most likely after the text so far; capture it as state[name]."""
    _check_name(name)
    if isinstance(choices, str) or not isinstance(choices, (list, tuple)) or not choices:
        raise ValueError(f"choices must be a non-empty list of strings, got {choices!r}")
    if any(not isinstance(c, str) or not c for c in choices):
        raise ValueError(f"choices must hold non-empty strings, got {choices!r}")
    if choices_method not in CHOICES_METHODS:
        raise ValueError(f"choices_method must be one of {sorted(CHOICES_METHODS)}, got {choices_method!r}")
    return Select(name, list(choices), choices_method)


# -- choosing ------------------------------------------------------------------------------------
def token_length_normalized(logprobs: list[list[float]]) -> int:
    """SGLang's default: the choice with the highest mean logprob over its tokens (a long choice is
    not punished for having more tokens; the first of equal scores wins)."""
    means = [sum(lp) / len(lp) for lp in logprobs]
    return max(range(len(means)), key=lambda i: (means[i], -i))


def greedy_token_selection(logprobs: list[list[float]]) -> int:
    """The choice whose first token is most likely; ties go to the next token, a shorter choice
    extended by its own mean logprob (SGLang's rule for choices that are prefixes of each other)."""
    width = max(len(lp) for lp in logprobs)
    padded = [lp + [sum(lp) / len(lp)] * (width - len(lp)) for lp in logprobs]
    return max(range(len(padded)), key=lambda i: (padded[i], -i))


CHOICES_METHODS = {
    "token_length_normalized": token_length_normalized,
    "greedy_token_selection": greedy_token_selection,
}


def choice_start(offset_of, num_tokens: int, prefix_len: int) -> int:
    """Index of a choice's first token among the num_tokens tokens of prefix + choice: the last token
    that starts at or before the prefix's end (offset_of(j): where token j starts in the decoded text,
    a non-decreasing function of j). A token straddling the boundary belongs to the choice: it is scored,
    never dropped. Both backends use this rule, so a program selects the same choice on either. A binary
    search: a few decodes, not one per token."""
    lo, hi = 0, num_tokens - 1  # the answer is in [lo, hi] once offset_of(lo) <= prefix_len
    if offset_of(0) > prefix_len:
        return 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if offset_of(mid) <= prefix_len:
            lo = mid
        else:
            hi = mid - 1
    return lo
