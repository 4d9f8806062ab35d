"""Any OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp server, Ollama, LiteLLM, OpenAI).

Configured with PGKB_OPENAI_GENERATORS, a JSON object mapping a modelArn (or the model id at the end
of an ARN) to `{"base_url": "http://host:8000/v1", "model": "...", "api_key_env": "VAR",
"timeout": 60}`. The timeout bounds connecting and each read; a request never waits past it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pgkb import config
from pgkb.errors import ModelNotAvailableError, ValidationError
from pgkb.generation import citations, prompts
from pgkb.generation.base import Answer, GenerationRequest, RewriteRequest
from pgkb.http_json import post_json, unexpected_answer

ENV = "PGKB_OPENAI_GENERATORS"
NAME = "openai-compatible"
DEFAULT_TIMEOUT = 60.0
_INFERENCE = {"maxTokens": "max_tokens", "temperature": "temperature", "topP": "top_p", "stopSequences": "stop"}


@dataclass(frozen=True)
class EndpointConfig:
    key: str
    base_url: str
    model: str
    api_key_env: str | None
    timeout: float


def configured() -> dict[str, EndpointConfig]:
    return _parse(config.current().openai_generators)


@lru_cache(maxsize=8)
def _parse(raw: str) -> dict[str, EndpointConfig]:
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            raise TypeError("expected a JSON object")
        out = {}
        for key, v in doc.items():
            if not isinstance(v, dict):
                raise TypeError(f"{key}: expected an object")
            timeout = float(v.get("timeout", DEFAULT_TIMEOUT))
            if not timeout > 0:
                raise ValueError(f"{key}: timeout must be positive")
            out[str(key)] = EndpointConfig(
                key=str(key),
                base_url=str(v["base_url"]).rstrip("/"),
                model=str(v["model"]),
                api_key_env=str(v["api_key_env"]) if v.get("api_key_env") else None,
                timeout=timeout,
            )
        return out
    except (ValueError, TypeError, KeyError) as e:
        raise ValidationError(
            f"{ENV} is not a JSON object of modelArn -> {{base_url, model, api_key_env, timeout}}: {e}"
        ) from e


def lookup(model_arn: str) -> EndpointConfig | None:
    table = configured()
    return table.get(model_arn) or table.get(model_arn.rsplit("/", 1)[-1])


class OpenAIChatGenerator:
    name = NAME

    def __init__(self, cfg: EndpointConfig) -> None:
        self.cfg = cfg
        self.url = f"{cfg.base_url}/chat/completions"
        self.api_key = config.env_value(cfg.api_key_env) if cfg.api_key_env else None
        if cfg.api_key_env and not self.api_key:
            raise ModelNotAvailableError(
                f"Generator {cfg.key} needs an API key in the environment variable {cfg.api_key_env}"
            )

    def check(self, additional_fields: dict[str, Any]) -> None:
        reserved = sorted({"model", "messages", "stream"} & set(additional_fields))
        if reserved:
            raise ValidationError(f"additionalModelRequestFields cannot set {', '.join(reserved)}")

    def _body(self, system: str | None, messages: list[dict[str, str]], inference: dict[str, Any],
              extra: dict[str, Any]) -> dict[str, Any]:
        msgs = ([{"role": "system", "content": system}] if system else []) + messages
        body: dict[str, Any] = {"model": self.cfg.model, "messages": msgs, "stream": False}
        for k, wire in _INFERENCE.items():
            if inference.get(k) is not None and inference.get(k) != []:
                body[wire] = inference[k]
        body.update(extra)
        return body

    def _complete(self, body: dict[str, Any]) -> str:
        doc = post_json(self.url, body, resource=self.cfg.key, what="model endpoint", api_key=self.api_key,
                        timeout=self.cfg.timeout)
        try:
            content = doc["choices"][0]["message"]["content"]
            if not isinstance(content, str):
                raise TypeError("message.content is not a string")
            return content
        except (TypeError, KeyError, IndexError) as e:
            raise unexpected_answer(self.cfg.key, "model endpoint", self.url,
                                    f"it did not answer with a chat completion: {e}") from None

    def generate(self, request: GenerationRequest) -> Answer:
        system, messages = prompts.generation_messages(
            request.prompt_template, request.question, request.results, request.history
        )
        raw = self._complete(self._body(system, messages, request.inference, request.additional_fields))
        return Answer(citations.segments_from_markers(raw, len(request.results)), NAME)

    def chat(self, system: str, user: str) -> str:
        """One plain exchange (AgenticRetrieveStream's planner): the model's reply text."""
        return self._complete(self._body(system, [{"role": "user", "content": user}], {}, {}))

    def rewrite(self, request: RewriteRequest) -> str:
        prompt = prompts.rewrite_prompt(request.prompt_template, request.question, request.history)
        body = self._body(None, [{"role": "user", "content": prompt}], request.inference, request.additional_fields)
        return clean_rewrite(self._complete(body), request.question)


def clean_rewrite(text: str, original: str) -> str:
    """The first non-empty line of the model's answer; the original question if it gave none."""
    for line in text.strip().splitlines():
        line = line.strip().strip('"').strip()
        if line:
            return line[:1000]
    return original
