"""Chapter 8: the OpenAI request bodies the server accepts, and their mapping to SamplingParams.

Pydantic checks the shapes and types strictly (a string where a number belongs is a 400, as in
OpenAI's API, not silently converted) and rejects unknown fields, so a misspelt `max_token` is an
error naming the field rather than ignored. OpenAI fields that minillm does not implement are
accepted only at their neutral values (`n=1`, `logprobs=null`, penalties 0, ...), so a client that
sends its defaults works and one that asks for more learns which field is unsupported.

Completions take OpenAI's legacy `logprobs` (an int: the top-k per token) and `echo` (the prompt
before the text; with logprobs, the prompt's logprobs too), not streamed (chapter 9's select).

Extra fields follow vLLM: top_k, ignore_eos, stop_token_ids, guided_regex, guided_json,
guided_choice; `response_format` takes a JSON schema. SamplingParams re-checks every value; its
ValueError names the field, and the server turns it into a 400 with that field as `param`.

Checked by: pytest tests/test_serve.py -k "error or guided".
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from minillm.request import SamplingParams

_STRICT = ConfigDict(extra="forbid", strict=True)
# OpenAI options minillm does not implement, at the values that ask for nothing
_NEUTRAL = {"n": 1, "presence_penalty": 0.0, "frequency_penalty": 0.0, "repetition_penalty": 1.0}


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool = False


class JSONSchemaFormat(BaseModel):
    model_config = _STRICT
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = _STRICT
    type: Literal["text", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class TextPart(BaseModel):
    model_config = _STRICT
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = _STRICT
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None


class _Request(BaseModel):
    """What /v1/completions and /v1/chat/completions share."""

    model_config = _STRICT
    model: str
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # vLLM's extra; -1 also means off
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False
    guided_regex: str | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_choice: list[str] | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None  # accepted and ignored, as OpenAI logs it
    # OpenAI features minillm does not implement: accepted at their neutral values only
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[str, float] | None = None
    logprobs: Any = None
    takes_logprobs: ClassVar[bool] = False  # completions do (chapter 9); chat does not

    def unsupported(self) -> str | None:
        """The first field asking for something minillm does not do, or None."""
        for name, neutral in _NEUTRAL.items():
            if getattr(self, name) != neutral:
                return name
        if self.logit_bias:
            return "logit_bias"
        if self.logprobs not in (None, False, 0) and not self.takes_logprobs:
            return "logprobs"
        return None

    def sampling_params(self, max_tokens: int) -> SamplingParams:
        """The request's SamplingParams; a bad value raises ValueError naming the field."""
        constraint = {}
        guided = {"guided_regex": "regex", "guided_json": "json_schema", "guided_choice": "choice"}
        given = [name for name in guided if getattr(self, name) is not None]
        fmt = self.response_format
        if fmt is not None and fmt.type == "json_schema":
            if fmt.json_schema is None:
                raise ValueError("response_format.json_schema: required when type is 'json_schema'")
            given.append("response_format")
        if len(given) > 1:
            raise ValueError(f"{given[1]}: give at most one constraint (got {', '.join(given)})")
        if given and given[0] == "response_format":
            constraint["json_schema"] = fmt.json_schema.schema_
        elif given:
            constraint[guided[given[0]]] = getattr(self, given[0])
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=0 if self.top_k == -1 else self.top_k,
            seed=self.seed,
            max_tokens=max_tokens,
            stop=self.stop,
            stop_token_ids=self.stop_token_ids,
            ignore_eos=self.ignore_eos,
            **constraint,
        )


class CompletionRequest(_Request):
    takes_logprobs: ClassVar[bool] = True
    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int | None = 16  # OpenAI's default for completions
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    def unsupported(self) -> str | None:
        if self.stream and (self.echo or self.logprobs is not None):
            return "echo" if self.echo else "logprobs"  # logprobs and echo: non-streamed only
        if self.logprobs is not None:  # chapter 9: OpenAI's legacy logprobs (an int, the top-k)
            if (
                isinstance(self.logprobs, bool)
                or not isinstance(self.logprobs, int)
                or not 0 <= self.logprobs <= 20
            ):
                return "logprobs"
        if self.best_of not in (None, 1):
            return "best_of"
        if self.suffix:
            return "suffix"
        return super().unsupported()

    def sampling_params(self, max_tokens: int) -> SamplingParams:
        """As for chat, plus logprobs: of the sampled tokens, and with echo of the prompt's too."""
        params = super().sampling_params(max_tokens)
        if self.logprobs is not None:
            params.logprobs = self.logprobs
            params.prompt_logprobs = self.logprobs if self.echo else None
            params.__post_init__()
        return params

    def prompts(self) -> list[str | list[int]]:
        """One prompt, or a batch of them: text, or token ids (as vLLM and OpenAI take them)."""
        p = self.prompt
        if isinstance(p, str) or (p and isinstance(p[0], int)):
            return [p]
        if not p:
            raise ValueError("prompt: the prompt is empty")
        return list(p)


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage]
    max_tokens: int | None = None  # None: until the model's length limit
    max_completion_tokens: int | None = None  # OpenAI's newer name for max_tokens
    add_generation_prompt: bool = True

    def chat_messages(self) -> list[dict]:
        if not self.messages:
            raise ValueError("messages: at least one message is needed")
        return [
            {
                "role": m.role,
                "content": m.content if isinstance(m.content, str) else "".join(p.text for p in m.content),
            }
            for m in self.messages
        ]


def param_of(message: str, prompt_field: str) -> str | None:
    """The request field an engine ValueError is about, for the error object's `param`."""
    m = re.match(r"SamplingParams\.(\w+)", message)
    if m:
        name = m.group(1)
        return {"regex": "guided_regex", "json_schema": "guided_json", "choice": "guided_choice"}.get(
            name, name
        )
    if message.startswith("SamplingParams:"):
        return "guided_regex"
    if message.startswith("prompt"):
        return prompt_field
    m = re.match(r"([a-z_.]+):", message)
    return m.group(1) if m else None
