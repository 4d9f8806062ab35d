"""bedrock-agent-runtime's RetrieveAndGenerate and RetrieveAndGenerateStream.

One call: validate -> resolve the knowledge base and the generator -> load the session's history ->
rewrite a follow-up with it -> Retrieve (the request's retrievalConfiguration) -> generate -> record
the turn. Citations come from the generator's segments, so every span is exact by construction:
`span.start` is the first character of the cited text in `output.text`, `span.end` is one past its
last character (end exclusive, Python slice semantics).

The stream variant does everything up to retrieval before it returns (so a bad request is an
ordinary error response) and generates inside the event iterator (errors become in-stream events).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pgkb.errors import ValidationError, unstorable
from pgkb.generation import citations as cite
from pgkb.generation import sessions
from pgkb.generation.base import Answer, GenerationRequest, RewriteRequest, Turn
from pgkb.generation.prompts import SEARCH_RESULTS
from pgkb.generation.registry import generator_for
from pgkb.service.access import user_id_of
from pgkb.service.base import Collaborator, KnowledgeBases, ServiceCore
from pgkb.service.retrieve import RetrieveOps

MAX_INPUT_CHARS = 1000  # RetrieveAndGenerateInputTextString max in the botocore model
MAX_TEMPLATE_CHARS = 4000
GENERATOR_HEADER = "x-pgkb-generator"
_SESSION_ID = re.compile(r"^[0-9a-zA-Z._:-]{2,100}$")
_KB_ID = re.compile(r"^[0-9a-zA-Z]{1,10}$")
_MODEL_ARN_MAX = 2048



@dataclass
class _Plan:
    kb_id: str
    session_id: str
    question: str
    query: str  # the question as retrieval saw it (rewritten for a follow-up)
    generator: Any
    request: GenerationRequest
    new_session: bool  # stored with the first turn (one transaction) rather than up front
    user_id: str | None = None  # userContext: the session is theirs alone


def _obj(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError(f"{field} must be an object")
    return value


def _template(cfg: dict[str, Any], field: str, required: tuple[str, ...]) -> str | None:
    pt = _obj(cfg.get("promptTemplate"), f"{field}.promptTemplate")
    text = pt.get("textPromptTemplate")
    if text is None:
        return None
    if not isinstance(text, str) or not 1 <= len(text) <= MAX_TEMPLATE_CHARS:
        raise ValidationError(f"{field}.promptTemplate.textPromptTemplate must be 1 to {MAX_TEMPLATE_CHARS} characters")
    missing = [p for p in required if p not in text]
    if missing:
        raise ValidationError(f"{field}.promptTemplate.textPromptTemplate must include {' and '.join(missing)}")
    return text


def _inference(cfg: dict[str, Any], field: str) -> dict[str, Any]:
    tic = _obj(_obj(cfg.get("inferenceConfig"), f"{field}.inferenceConfig").get("textInferenceConfig"),
               f"{field}.inferenceConfig.textInferenceConfig")
    path = f"{field}.inferenceConfig.textInferenceConfig"
    for k in ("temperature", "topP"):
        v = tic.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1):
            raise ValidationError(f"{path}.{k} must be a number from 0 to 1")
    mt = tic.get("maxTokens")
    if mt is not None and (isinstance(mt, bool) or not isinstance(mt, int) or not 0 <= mt <= 65536):
        raise ValidationError(f"{path}.maxTokens must be an integer from 0 to 65536")
    stops = tic.get("stopSequences")
    if stops is not None and (
        not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops)
    ):
        raise ValidationError(f"{path}.stopSequences must be a list of at most 4 non-empty strings")
    unknown = sorted(set(tic) - {"temperature", "topP", "maxTokens", "stopSequences"})
    if unknown:
        raise ValidationError(f"{path} has unknown members {', '.join(unknown)}")
    return dict(tic)


def _check_common(cfg: dict[str, Any], field: str) -> dict[str, Any]:
    if cfg.get("guardrailConfiguration"):
        raise ValidationError(f"{field}.guardrailConfiguration is not supported by pgkb")
    perf = _obj(cfg.get("performanceConfig"), f"{field}.performanceConfig")
    if perf.get("latency") not in (None, "standard", "optimized"):
        raise ValidationError(f"{field}.performanceConfig.latency must be standard or optimized")
    return _obj(cfg.get("additionalModelRequestFields"), f"{field}.additionalModelRequestFields")


class GenerateOps(Collaborator):
    """RetrieveAndGenerate (and its stream): retrieval through `retriever`, then a generator."""

    def __init__(self, core: ServiceCore, kbs: KnowledgeBases, retriever: RetrieveOps) -> None:
        super().__init__(core, kbs)
        self.retriever = retriever

    # ------------------------------------------------------------------------------- public API

    def retrieve_and_generate(
        self,
        *,
        input: dict[str, Any],
        retrieveAndGenerateConfiguration: dict[str, Any] | None = None,
        sessionId: str | None = None,
        sessionConfiguration: dict[str, Any] | None = None,
        userContext: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        with self.kbs.one_read_per_call():
            plan = self._prepare(input, retrieveAndGenerateConfiguration, sessionId, sessionConfiguration,
                                 store_session_now=False, user_id=user_id_of(userContext))
            answer = plan.generator.generate(plan.request)
        self._record(plan, answer)
        out: dict[str, Any] = {
            "output": {"text": answer.text},
            "sessionId": plan.session_id,
            "citations": _citations(answer, plan.request.results),
            "ResponseMetadata": {"HTTPHeaders": {GENERATOR_HEADER: answer.generator}},
        }
        return out

    def retrieve_and_generate_stream(
        self,
        *,
        input: dict[str, Any],
        retrieveAndGenerateConfiguration: dict[str, Any] | None = None,
        sessionId: str | None = None,
        sessionConfiguration: dict[str, Any] | None = None,
        userContext: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """`{"sessionId", "stream"}`: `stream` yields `{"output": {"text"}}` and `{"citation": {...}}`
        events; a failure while generating is raised from the iterator (the server frames it)."""
        with self.kbs.one_read_per_call():
            plan = self._prepare(input, retrieveAndGenerateConfiguration, sessionId, sessionConfiguration,
                                 store_session_now=True, user_id=user_id_of(userContext))
        return {
            "sessionId": plan.session_id,
            "stream": self._events(plan),
            "ResponseMetadata": {"HTTPHeaders": {GENERATOR_HEADER: plan.generator.name}},
        }

    # ------------------------------------------------------------------------------- the steps

    def _events(self, plan: _Plan) -> Iterator[dict[str, Any]]:
        answer = plan.generator.generate(plan.request)
        refs = [_reference(r) for r in plan.request.results]
        pos = 0
        pending = ""
        for seg in answer.segments:
            if not seg.sources:
                pending += seg.text  # separators ride with the next cited part
                pos += len(seg.text)
                continue
            yield {"output": {"text": pending + seg.text}}
            pending = ""
            part = _part(seg.text, pos)
            cited = [refs[i] for i in seg.sources]
            yield {"citation": {"citation": {"generatedResponsePart": part, "retrievedReferences": cited},
                                "generatedResponsePart": part, "retrievedReferences": cited}}
            pos += len(seg.text)
        if pending:
            yield {"output": {"text": pending}}
        self._record(plan, answer)

    def _prepare(
        self, input: Any, config: Any, session_id: str | None, session_config: Any, *, store_session_now: bool,
        user_id: str | None = None,
    ) -> _Plan:
        inp = _obj(input, "input")
        question = inp.get("text")
        if not isinstance(question, str):
            raise ValidationError("input.text is required")
        if (why := unstorable(question)) is not None:
            raise ValidationError(f"input.text {why}")
        if len(question) > MAX_INPUT_CHARS:
            raise ValidationError(f"input.text is {len(question)} characters; the limit is {MAX_INPUT_CHARS}")
        if not question.strip():
            raise ValidationError("input.text must not be blank")
        if session_config:
            raise ValidationError(
                "sessionConfiguration (a KMS key for session data) is not supported by pgkb; sessions are "
                "stored in the catalog database, protect it as you would the knowledge base itself"
            )
        if session_id is not None and (not isinstance(session_id, str) or not _SESSION_ID.match(session_id)):
            raise ValidationError("sessionId must be 2 to 100 characters matching ^[0-9a-zA-Z._:-]+$")
        cfg = _obj(config, "retrieveAndGenerateConfiguration")
        kind = cfg.get("type")
        if kind == "EXTERNAL_SOURCES":
            raise ValidationError(
                "retrieveAndGenerateConfiguration.type EXTERNAL_SOURCES is not supported by pgkb; use KNOWLEDGE_BASE"
            )
        if kind != "KNOWLEDGE_BASE":
            raise ValidationError("retrieveAndGenerateConfiguration.type must be KNOWLEDGE_BASE")
        kbc = _obj(cfg.get("knowledgeBaseConfiguration"), "knowledgeBaseConfiguration")
        if not kbc:
            raise ValidationError("retrieveAndGenerateConfiguration.knowledgeBaseConfiguration is required")
        kb_id = kbc.get("knowledgeBaseId")
        if not isinstance(kb_id, str) or not _KB_ID.match(kb_id):
            raise ValidationError("knowledgeBaseConfiguration.knowledgeBaseId must be up to 10 letters and digits")
        model_arn = kbc.get("modelArn")
        if not isinstance(model_arn, str) or not 1 <= len(model_arn) <= _MODEL_ARN_MAX:
            raise ValidationError("knowledgeBaseConfiguration.modelArn is required")
        gen_cfg = _obj(kbc.get("generationConfiguration"), "generationConfiguration")
        template = _template(gen_cfg, "generationConfiguration", (SEARCH_RESULTS,))
        inference = _inference(gen_cfg, "generationConfiguration")
        extra = _check_common(gen_cfg, "generationConfiguration")
        orch = _obj(kbc.get("orchestrationConfiguration"), "orchestrationConfiguration")
        orch_template = _template(
            orch, "orchestrationConfiguration", ("$conversation_history$", "$output_format_instructions$")
        )
        orch_inference = _inference(orch, "orchestrationConfiguration")
        orch_extra = _check_common(orch, "orchestrationConfiguration")
        if orch.get("queryTransformationConfiguration"):
            raise ValidationError("orchestrationConfiguration.queryTransformationConfiguration is not supported by pgkb")
        retrieval = kbc.get("retrievalConfiguration")

        kb = self.resolve(kb_id)  # ResourceNotFoundException before any model work
        generator = generator_for(model_arn)
        generator.check(extra)
        history: list[Turn] = []
        new_session = session_id is None
        if session_id is None:
            session_id = sessions.new_id()
        else:
            with self.db.connection() as conn:
                history = sessions.history(conn, session_id, kb.id, user_id)
        query = question
        if history:
            query = generator.rewrite(
                RewriteRequest(question, history, orch_template, orch_inference, orch_extra)
            )
        # Only chunks this user may see reach the prompt, so the answer and its citations hold nothing else.
        results, _ = self.retriever.retrieve_results(kb.id, query, retrieval, user_id=user_id)
        if new_session and store_session_now:  # after retrieval: a refused request leaves no session
            with self.db.connection() as conn:
                sessions.create(conn, kb.id, session_id, user_id)
            new_session = False
        request = GenerationRequest(
            question=question, results=results, history=history, prompt_template=template,
            inference=inference, additional_fields=extra,
        )
        return _Plan(kb.id, session_id, question, query, generator, request, new_session, user_id)

    def _record(self, plan: _Plan, answer: Answer) -> None:
        with self.db.connection() as conn:
            sessions.append(conn, plan.session_id, plan.question, plan.query, answer.text,
                            new_for_kb=plan.kb_id if plan.new_session else None, user_id=plan.user_id)


def _reference(result: dict[str, Any]) -> dict[str, Any]:
    """A Retrieve result as a RetrievedReference: the same members, without `score`."""
    return {k: v for k, v in result.items() if k != "score"}


def _part(text: str, start: int) -> dict[str, Any]:
    return {"textResponsePart": {"text": text, "span": {"start": start, "end": start + len(text)}}}


def _citations(answer: Answer, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    refs = [_reference(r) for r in results]
    return [
        {"generatedResponsePart": _part(seg.text, start), "retrievedReferences": [refs[i] for i in seg.sources]}
        for start, _end, seg in cite.spans(answer.segments)
    ]
