"""Chapter 9: OpenAI's legacy completions `logprobs` object from an output's logprobs.

    {"tokens": [...], "token_logprobs": [...], "top_logprobs": [{token: logprob}, ...],
     "text_offset": [...]}

over the prompt's tokens (with echo; the first has no logprob: null) and then the generated ones.
text_offset[j] is len(decode(ids[:j])), the character where token j starts: a client finds where
its own text begins from it (minillm.lang's Endpoint.select does).

Checked by: pytest -m ch9 tests/test_ch9_endpoint.py.
"""

from __future__ import annotations

from minillm.request import RequestOutput


def completion_logprobs(tokenizer, out: RequestOutput, echo: bool) -> dict:
    decode = tokenizer.decode if tokenizer is not None else (lambda ids: "")  # token ids in, no text
    ids = (list(out.prompt_token_ids) if echo else []) + list(out.token_ids)
    entries = (list(out.prompt_logprobs) if echo else []) + list(out.logprobs)
    before = [] if echo else list(out.prompt_token_ids)  # offsets count from the returned text's start
    base = len(decode(before))
    return {
        "tokens": [decode([t]) for t in ids],
        "token_logprobs": [None if e is None else e[t] for t, e in zip(ids, entries)],
        "top_logprobs": [None if e is None else {decode([t]): lp for t, lp in e.items()} for e in entries],
        "text_offset": [len(decode(before + ids[:j])) - base for j in range(len(ids))],
    }
