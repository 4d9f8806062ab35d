"""Amazon Bedrock foundation models and inference profiles through boto3's Converse API.

Used for any modelArn that is not `pgkb.extractive` or configured in PGKB_OPENAI_GENERATORS, when
AWS credentials are configured or PGKB_BEDROCK_ENDPOINT_URL points at a Converse-compatible endpoint
(then requests go unsigned unless credentials exist). Timeouts and retries are bounded.
"""

from __future__ import annotations

import re
from typing import Any

from pgkb import config as pgkb_config
from pgkb.errors import (
    BadGatewayError,
    DependencyFailedError,
    ModelNotAvailableError,
    PgkbError,
    ValidationError,
)
from pgkb.generation import citations, prompts
from pgkb.generation.base import Answer, GenerationRequest, RewriteRequest
from pgkb.generation.openai import clean_rewrite

ENDPOINT_ENV = "PGKB_BEDROCK_ENDPOINT_URL"
TIMEOUT_ENV = "PGKB_BEDROCK_GENERATION_TIMEOUT"
NAME = "bedrock-converse"
_INFERENCE = ("maxTokens", "temperature", "topP", "stopSequences")
_SERVER_SIDE = {"InternalServerException", "ServiceUnavailableException", "ModelTimeoutException",
                "ThrottlingException", "ModelNotReadyException"}
_REGION_IN_ARN = re.compile(r"^arn:aws[^:]*:bedrock:([a-z0-9-]+):")


def _client(model_arn: str) -> Any:
    import boto3
    from botocore.config import Config

    settings = pgkb_config.current()
    endpoint = settings.bedrock_endpoint_url
    session = boto3.Session()
    m = _REGION_IN_ARN.match(model_arn)
    region = (m.group(1) if m else None) or session.region_name or settings.region
    timeout = settings.bedrock_generation_timeout
    config = Config(connect_timeout=min(timeout, 10), read_timeout=timeout,
                    retries={"max_attempts": 2, "mode": "standard"})
    if session.get_credentials() is None:
        if not endpoint:
            raise ModelNotAvailableError(
                f"modelArn {model_arn} is not pgkb.extractive, not in PGKB_OPENAI_GENERATORS, and Amazon Bedrock "
                f"needs AWS credentials (or {ENDPOINT_ENV}); configure one of them or use modelArn pgkb.extractive"
            )
        from botocore import UNSIGNED

        config = config.merge(Config(signature_version=UNSIGNED))
    return session.client("bedrock-runtime", region_name=region, endpoint_url=endpoint, config=config)


class BedrockConverseGenerator:
    name = NAME

    def __init__(self, model_arn: str) -> None:
        self.model_arn = model_arn
        self.client = _client(model_arn)

    def check(self, additional_fields: dict[str, Any]) -> None:
        pass  # passed through as Converse's additionalModelRequestFields

    def _converse(self, system: str | None, messages: list[dict[str, str]], inference: dict[str, Any],
                  extra: dict[str, Any]) -> str:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        kwargs: dict[str, Any] = {
            "modelId": self.model_arn,
            "messages": [{"role": m["role"], "content": [{"text": m["content"]}]} for m in messages],
        }
        if system:
            kwargs["system"] = [{"text": system}]
        cfg = {k: inference[k] for k in _INFERENCE if inference.get(k) is not None}
        if cfg:
            kwargs["inferenceConfig"] = cfg
        if extra:
            kwargs["additionalModelRequestFields"] = extra
        resource = self.model_arn
        try:
            resp = self.client.converse(**kwargs)
        except ClientError as e:
            err = e.response.get("Error", {})
            code, msg = err.get("Code", "?"), err.get("Message", "")
            if code in ("ValidationException", "AccessDeniedException", "ResourceNotFoundException"):
                raise ValidationError(f"Bedrock Converse({resource}) refused the request: {code}: {msg}") from e
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            server_side = code in _SERVER_SIDE or status >= 500
            raise _failed(BadGatewayError if server_side else DependencyFailedError, resource,
                          f"{code}: {msg}".rstrip(": ")) from e
        except (ConnectTimeoutError, ReadTimeoutError, EndpointConnectionError) as e:
            raise _failed(BadGatewayError, resource, str(e)) from e
        except BotoCoreError as e:
            raise _failed(DependencyFailedError, resource, str(e)) from e
        try:
            parts = resp["output"]["message"]["content"]
            return "".join(p.get("text", "") for p in parts)
        except (KeyError, TypeError) as e:
            raise _failed(DependencyFailedError, resource, f"Converse answered without output.message.content: {e}") from e

    def generate(self, request: GenerationRequest) -> Answer:
        system, messages = prompts.generation_messages(
            request.prompt_template, request.question, request.results, request.history
        )
        raw = self._converse(system, messages, request.inference, request.additional_fields)
        return Answer(citations.segments_from_markers(raw, len(request.results)), NAME)

    def chat(self, system: str, user: str) -> str:
        """One plain exchange (AgenticRetrieveStream's planner): the model's reply text."""
        return self._converse(system, [{"role": "user", "content": user}], {}, {})

    def rewrite(self, request: RewriteRequest) -> str:
        prompt = prompts.rewrite_prompt(request.prompt_template, request.question, request.history)
        raw = self._converse(None, [{"role": "user", "content": prompt}], request.inference,
                             request.additional_fields)
        return clean_rewrite(raw, request.question)


def _failed(kind: type[BadGatewayError] | type[DependencyFailedError], resource: str, cause: str) -> PgkbError:
    return kind(f"The model {resource} failed: {cause}", resource_name=resource)
