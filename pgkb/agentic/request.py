"""AgenticRetrieveStream's request → a checked `AgenticRequest` (contract 2026 §3.2).

Everything here runs before the stream starts, so a bad request is an ordinary HTTP error
(ValidationException 400), never an in-stream event. The botocore model's own constraints
(required members, enums, minimums, patterns) are checked again here because the Python API
takes requests without the server's validator in front of it.

pgkb's choices where Bedrock is silent or pgkb lacks the feature:
* at most MAX_RETRIEVERS retrievers (Bedrock's documented limit);
* `maxAgentIteration` defaults to DEFAULT_ITERATIONS and may be at most MAX_ITERATIONS;
* `foundationModelType` MANAGED (or absent) is pgkb's default planner, the offline one (no model);
  CUSTOM with a BEDROCK_FOUNDATION_MODEL modelArn picks a generator as RetrieveAndGenerate does
  (`pgkb.extractive` = offline, PGKB_OPENAI_GENERATORS, else Bedrock Converse);
* guardrails (`policyConfiguration`), retrieval instructions, AgentCore memory, Mantle models and
  `nextToken` (pgkb answers in one stream and never issues one) are refused by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pgkb.errors import ValidationError, unstorable

MAX_RETRIEVERS = 5
DEFAULT_ITERATIONS = 3
MAX_ITERATIONS = 10
DEFAULT_RESULTS = 5  # per retriever, as Retrieve's default numberOfResults
MAX_RESULTS = 100
MAX_MESSAGE_CHARS = 20000
MAX_MESSAGES = 100
_KB_ID = re.compile(r"^[0-9a-zA-Z]{1,10}$")
_MODEL_ARN = re.compile(
    r"^(arn:aws(-[^:]+)?:(bedrock|sagemaker):[a-z0-9-]{1,20}:([0-9]{12})?:([a-z-]+/)?)?([a-z0-9.-]{1,63}){0,2}"
    r"(([:][a-z0-9-]{1,63}){0,2})?(/[a-z0-9]{1,12})?$"
)


@dataclass(frozen=True)
class Retriever:
    knowledge_base_id: str
    description: str | None
    filter: dict[str, Any] | None
    max_results: int

    @property
    def identifier(self) -> str:
        """`sourceRetriever.identifier`: the knowledge base id (Bedrock's docs are silent; samples read it so)."""
        return self.knowledge_base_id


@dataclass
class AgenticRequest:
    messages: list[tuple[str, str]]  # (role, text), oldest first; the last is the user's question
    retrievers: list[Retriever]
    model_arn: str | None  # None: the offline planner
    max_iterations: int
    reranking_type: str | None  # CUSTOM | MANAGED | NONE | None (each knowledge base's default)
    reranking_configuration: dict[str, Any] | None
    generate: bool
    user_id: str | None = None

    @property
    def question(self) -> str:
        return self.messages[-1][1]

    def previous_questions(self) -> list[str]:
        return [t for r, t in self.messages[:-1] if r == "user"]


def _obj(value: Any, where: str, *, required: bool = False) -> dict[str, Any]:
    if value is None:
        if required:
            raise ValidationError(f"{where} is required")
        return {}
    if not isinstance(value, dict):
        raise ValidationError(f"{where} must be an object")
    return value


def _int(value: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValidationError(f"{where} must be an integer from {lo} to {hi}")
    return value


def _messages(value: Any) -> list[tuple[str, str]]:
    if not isinstance(value, list) or not value:
        raise ValidationError("messages is required: a list of at least one message")
    if len(value) > MAX_MESSAGES:
        raise ValidationError(f"messages holds {len(value)} messages; pgkb takes at most {MAX_MESSAGES}")
    out = []
    for i, m in enumerate(value):
        m = _obj(m, f"messages[{i}]", required=True)
        role = m.get("role")
        if role not in ("user", "assistant"):
            raise ValidationError(f"messages[{i}].role must be user or assistant")
        text = _obj(m.get("content"), f"messages[{i}].content", required=True).get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValidationError(f"messages[{i}].content.text is required and must not be blank")
        if (why := unstorable(text)) is not None:
            raise ValidationError(f"messages[{i}].content.text {why}")
        if len(text) > MAX_MESSAGE_CHARS:
            raise ValidationError(f"messages[{i}].content.text is {len(text)} characters; the limit is {MAX_MESSAGE_CHARS}")
        out.append((role, text))
    if out[-1][0] != "user":
        raise ValidationError("the last of messages must have role user: it is the question to answer")
    return out


def _retrievers(value: Any) -> list[Retriever]:
    from pgkb.retrieval.filters import validate_filter

    if not isinstance(value, list) or not value:
        raise ValidationError("retrievers is required: a list of at least one retriever")
    if len(value) > MAX_RETRIEVERS:
        raise ValidationError(f"retrievers holds {len(value)} retrievers; the limit is {MAX_RETRIEVERS} knowledge bases")
    out = []
    for i, r in enumerate(value):
        where = f"retrievers[{i}]"
        r = _obj(r, where, required=True)
        desc = r.get("description")
        if desc is not None and not isinstance(desc, str):
            raise ValidationError(f"{where}.description must be a string")
        conf = _obj(r.get("configuration"), f"{where}.configuration", required=True)
        if set(conf) != {"knowledgeBase"}:
            raise ValidationError(f"{where}.configuration must set exactly one member: knowledgeBase")
        kbc = _obj(conf["knowledgeBase"], f"{where}.configuration.knowledgeBase", required=True)
        kb_id = kbc.get("knowledgeBaseId")
        if not isinstance(kb_id, str) or not _KB_ID.match(kb_id):
            raise ValidationError(f"{where}.configuration.knowledgeBase.knowledgeBaseId must be 1 to 10 letters and digits")
        ov = _obj(kbc.get("retrievalOverrides"), f"{where}.configuration.knowledgeBase.retrievalOverrides")
        unknown = sorted(set(ov) - {"filter", "maxNumberOfResults"})
        if unknown:
            raise ValidationError(f"{where} retrievalOverrides has unknown members {', '.join(unknown)}")
        flt = ov.get("filter")
        if flt is not None:
            validate_filter(flt, f"{where}.configuration.knowledgeBase.retrievalOverrides.filter")
        n = ov.get("maxNumberOfResults", DEFAULT_RESULTS)
        n = _int(n, f"{where}.configuration.knowledgeBase.retrievalOverrides.maxNumberOfResults", 1, MAX_RESULTS)
        out.append(Retriever(kb_id, desc, flt, n))
    return out


def _model(cfg: dict[str, Any]) -> str | None:
    kind = cfg.get("foundationModelType", "MANAGED")
    fmc = cfg.get("foundationModelConfiguration")
    if kind == "MANAGED":
        if fmc is not None:
            raise ValidationError(
                "agenticRetrieveConfiguration.foundationModelConfiguration goes with foundationModelType CUSTOM;"
                " MANAGED is pgkb's default planner (offline, no model)"
            )
        return None
    if kind != "CUSTOM":
        raise ValidationError("agenticRetrieveConfiguration.foundationModelType must be CUSTOM or MANAGED")
    where = "agenticRetrieveConfiguration.foundationModelConfiguration"
    fmc = _obj(fmc, where, required=True)
    ftype = fmc.get("type")
    if ftype == "MANTLE_FOUNDATION_MODEL":
        raise ValidationError(f"{where}.type MANTLE_FOUNDATION_MODEL is not supported by pgkb; use BEDROCK_FOUNDATION_MODEL")
    if ftype != "BEDROCK_FOUNDATION_MODEL":
        raise ValidationError(f"{where}.type must be BEDROCK_FOUNDATION_MODEL or MANTLE_FOUNDATION_MODEL")
    if fmc.get("mantleFoundationModelConfiguration") is not None:
        raise ValidationError(f"{where}.mantleFoundationModelConfiguration goes with type MANTLE_FOUNDATION_MODEL")
    bfc = _obj(fmc.get("bedrockFoundationModelConfiguration"), f"{where}.bedrockFoundationModelConfiguration",
               required=True)
    arn = _obj(bfc.get("modelConfiguration"), f"{where}.bedrockFoundationModelConfiguration.modelConfiguration",
               required=True).get("modelArn")
    if not isinstance(arn, str) or not 1 <= len(arn) <= 2048 or not _MODEL_ARN.match(arn):
        raise ValidationError(f"{where}.bedrockFoundationModelConfiguration.modelConfiguration.modelArn is not a model ARN or id")
    return arn


def _reranking(cfg: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    mode = cfg.get("rerankingModelType")
    rc = cfg.get("rerankingConfiguration")
    if mode not in (None, "CUSTOM", "MANAGED", "NONE"):
        raise ValidationError("agenticRetrieveConfiguration.rerankingModelType must be CUSTOM, MANAGED or NONE")
    if mode != "CUSTOM":
        if rc is not None:
            raise ValidationError("agenticRetrieveConfiguration.rerankingConfiguration goes with rerankingModelType CUSTOM")
        return mode, None
    rc = _obj(rc, "agenticRetrieveConfiguration.rerankingConfiguration", required=True)
    if rc.get("type") != "BEDROCK_RERANKING_MODEL":
        raise ValidationError("agenticRetrieveConfiguration.rerankingConfiguration.type must be BEDROCK_RERANKING_MODEL")
    return mode, rc  # the same shape as Retrieve's rerankingConfiguration


def parse_request(
    *,
    messages: Any,
    retrievers: Any,
    agenticRetrieveConfiguration: Any,
    generateResponse: Any = None,
    userContext: Any = None,
    policyConfiguration: Any = None,
    retrievalInstructionConfiguration: Any = None,
    memoryConfiguration: Any = None,
    nextToken: Any = None,
) -> AgenticRequest:
    from pgkb.service.access import user_id_of

    if policyConfiguration:
        raise ValidationError("policyConfiguration (guardrails) is not supported by pgkb")
    if retrievalInstructionConfiguration:
        raise ValidationError("retrievalInstructionConfiguration is not supported by pgkb: it has no RetrievalInstruction resources")
    if memoryConfiguration:
        raise ValidationError("memoryConfiguration (AgentCore Memory) is not supported by pgkb; send the history in messages")
    if nextToken is not None:
        raise ValidationError("nextToken: pgkb answers in one stream and never issues a nextToken")
    if agenticRetrieveConfiguration is None:
        raise ValidationError("agenticRetrieveConfiguration is required (all of its members are optional: {} will do)")
    cfg = _obj(agenticRetrieveConfiguration, "agenticRetrieveConfiguration")
    msgs = _messages(messages)
    rets = _retrievers(retrievers)
    model = _model(cfg)
    iters = cfg.get("maxAgentIteration")
    iters = DEFAULT_ITERATIONS if iters is None else _int(iters, "agenticRetrieveConfiguration.maxAgentIteration", 0,
                                                          MAX_ITERATIONS)
    mode, rc = _reranking(cfg)
    if generateResponse is not None and not isinstance(generateResponse, bool):
        raise ValidationError("generateResponse must be true or false")
    return AgenticRequest(
        messages=msgs, retrievers=rets, model_arn=model, max_iterations=iters, reranking_type=mode,
        reranking_configuration=rc, generate=generateResponse is not False, user_id=user_id_of(userContext),
    )
