"""Chapter 8: chat messages -> one prompt string, through the checkpoint's chat template.

A chat template is a Jinja program shipped with the tokenizer (Hugging Face keeps it under
"chat_template" in tokenizer_config.json, or in chat_template.jinja beside it). It receives `messages`
(role/content dicts), `add_generation_prompt`, and the special tokens, and returns the text the model
was trained on. The embedded default model, trained on Python source, ships a small one that writes
the conversation as comments. A checkpoint without a template cannot chat: the server answers 400
naming `chat_template` unless `minillm serve --chat-template FILE` supplies one.

As transformers does, templates run in Jinja's sandbox: a template is data from a checkpoint, not code
the server trusts.

Checked by: pytest tests/test_serve.py -k chat.
"""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment


class ChatTemplateError(ValueError):
    """No template, or one that fails on these messages (a 400 naming chat_template)."""


def find_chat_template(tokenizer_dir: str | Path | None, override: str | Path | None = None) -> str | None:
    """The template text: the --chat-template file if given, else the tokenizer folder's own."""
    if override is not None:
        path = Path(override)
        if not path.is_file():
            raise ValueError(f"--chat-template: no such file {str(path)!r}")
        return path.read_text(encoding="utf-8")
    if tokenizer_dir is None:
        return None
    folder = Path(tokenizer_dir)
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    cfg_file = folder / "tokenizer_config.json"
    template = json.loads(cfg_file.read_text()).get("chat_template") if cfg_file.is_file() else None
    if isinstance(template, list):  # several named templates: the "default" one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    return template


class ChatTemplate:
    def __init__(self, source: str | None, bos_token: str = "", eos_token: str = ""):
        self.source = source
        self.special = {"bos_token": bos_token, "eos_token": eos_token}
        self._template = None
        if source is not None:
            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            env.globals["raise_exception"] = _raise
            try:
                self._template = env.from_string(source)
            except jinja2.TemplateSyntaxError as err:
                raise ValueError(f"chat_template: line {err.lineno}: {err.message}") from None

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        if self._template is None:
            raise ChatTemplateError(
                "chat_template: this model's tokenizer has no chat template; use /v1/completions, or "
                "start the server with --chat-template FILE"
            )
        try:
            return self._template.render(
                messages=messages, add_generation_prompt=add_generation_prompt, **self.special
            )
        except jinja2.TemplateError as err:
            raise ChatTemplateError(f"chat_template: {err}") from None


def _raise(message: str):
    raise jinja2.TemplateError(message)
