"""Chapter 9: the backend over an OpenAI-compatible endpoint (minillm serve, chapter 8).

gen is one /v1/completions request (vLLM's guided_regex / guided_json carry regex= and json_schema=).
select sends prefix + choice per choice with echo=true, logprobs=0, max_tokens=1, the legacy
completions way to score a text (SGLang's OpenAI backend cannot, and falls back to generating; this
server can). The prompt's text_offset says where the choice's tokens begin, by the same rule the
in-process Runtime uses. Echo asks for the whole prompt's logprobs, so the server computes the whole
prompt (its prefix cache serves none of it: vLLM's rule for prompt logprobs); over HTTP a select
costs its prefix again, in process it does not.

Checked by: pytest -m ch9 tests/test_ch9_endpoint.py.
"""

from __future__ import annotations

from minillm.lang.ir import CHOICES_METHODS, choice_start
from minillm.request import SamplingParams


class Endpoint:
    def __init__(
        self, base_url: str, model: str | None = None, api_key: str | None = None, timeout_s: float = 600.0
    ):
        """base_url: the server's root (http://host:port) or its /v1; model: the served name (default: the
        first of /v1/models)."""
        import httpx  # the server's client library; only this backend needs it

        root = base_url.rstrip("/")
        self.api_url = root if root.endswith("/v1") else root + "/v1"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(timeout=timeout_s, headers=headers)
        self.model = model or self.client.get(self.api_url + "/models").json()["data"][0]["id"]
        self.num_requests = 0

    def _complete(self, body: dict) -> dict:
        self.num_requests += 1
        resp = self.client.post(self.api_url + "/completions", json={"model": self.model, **body})
        data = resp.json()
        if resp.status_code != 200:
            err = data.get("error", {})
            raise ValueError(f"{err.get('param') or 'request'}: {err.get('message', resp.text)}")
        return data

    def generate(self, prompt: str, params: SamplingParams) -> tuple[str, dict]:
        body = {
            "prompt": prompt,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,
            "ignore_eos": params.ignore_eos,
        }
        if params.stop:
            body["stop"] = params.stop
        if params.seed is not None:
            body["seed"] = params.seed
        if params.regex is not None:
            body["guided_regex"] = params.regex
        if params.json_schema is not None:
            body["guided_json"] = params.json_schema
        data = self._complete(body)
        choice, usage = data["choices"][0], data["usage"]
        meta = {
            "prompt_tokens": usage["prompt_tokens"],
            "completion_tokens": usage["completion_tokens"],
            "finish_reason": choice["finish_reason"],
        }
        return choice["text"], meta

    def select(self, prefix: str, choices: list[str], choices_method: str) -> tuple[int, dict]:
        logprobs, prompt_tokens = [], 0
        for c in choices:  # one at a time: program threads already overlap on the server
            text = prefix + c
            data = self._complete(
                {"prompt": text, "max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": 0}
            )
            lp, P = data["choices"][0]["logprobs"], data["usage"]["prompt_tokens"]
            k = choice_start(lp["text_offset"].__getitem__, P, len(prefix))
            if k == 0:
                raise ValueError("select: there must be text before it (a first token has no logprob)")
            logprobs.append(lp["token_logprobs"][k:P])
            prompt_tokens += P
        index = CHOICES_METHODS[choices_method](logprobs)
        return index, {"choice_logprobs": logprobs, "prompt_tokens": prompt_tokens}
