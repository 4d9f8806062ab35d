"""RetrieveAndGenerate through the service (issue 7): the extractive generator's exact citations,
sessions and follow-up rewriting, validation, the stream's events, and the OpenAI-compatible and
Bedrock Converse generators against a local endpoint that records what pgkb sent."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pytest
from rag_fakes import FakeModel, fake_model, generators_env

from pgkb.config import Settings
from pgkb.errors import BadGatewayError, DependencyFailedError, NotFoundError, PgkbError, ValidationError
from pgkb.generation.citations import segments_from_markers, spans
from pgkb.generation.extractive import rewrite_follow_up
from pgkb.generation.prompts import render
from pgkb.service import KnowledgeBaseService

ARN = "arn:aws:bedrock:us-east-1::foundation-model/sentence-transformers.all-minilm-l6-v2"
DOCS = {
    "eiffel": "The Eiffel Tower is a wrought-iron lattice tower in Paris. It was designed by the company of "
    "Gustave Eiffel. The tower was completed in 1889 for the World's Fair. It is 330 metres tall.",
    "penguins": "Penguins are flightless birds of the Southern Hemisphere. Emperor penguins breed during the "
    "Antarctic winter. They can dive deeper than 500 metres.",
    "bread": "To bake bread, mix flour, water, yeast and salt. Let the dough rise for two hours. Bake it at "
    "220 degrees until the crust is brown.",
    "volcano": "Volcanoes erupt when magma rises through the crust. Lava cools into basalt rock. Mount Etna is "
    "one of the most active volcanoes in Europe.",
}


def documents(docs: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {"content": {"dataSourceType": "CUSTOM", "custom": {
            "customDocumentIdentifier": {"id": k}, "sourceType": "IN_LINE",
            "inlineContent": {"type": "TEXT", "textContent": {"data": v}}}}}
        for k, v in docs.items()
    ]


def new_kb(svc: Any, docs: dict[str, str]) -> str:
    kb = svc.create_knowledge_base(
        name=f"rag{uuid.uuid4().hex[:8]}",
        knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": ARN}},
    )["knowledgeBase"]["knowledgeBaseId"]
    ds = svc.create_data_source(knowledgeBaseId=kb, name="inline", dataSourceConfiguration={"type": "CUSTOM"})
    if docs:
        svc.ingest_knowledge_base_documents(
            knowledgeBaseId=kb, dataSourceId=ds["dataSource"]["dataSourceId"], documents=documents(docs)
        )
    return kb


@pytest.fixture(scope="module")
def svc(settings: Settings) -> Iterator[Any]:
    with KnowledgeBaseService(settings) as s:
        yield s


@pytest.fixture(scope="module")
def kb(svc: Any) -> str:
    return new_kb(svc, DOCS)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeModel]:
    with fake_model() as m:
        yield m


@pytest.fixture
def llm(fake: FakeModel, monkeypatch: pytest.MonkeyPatch) -> FakeModel:
    monkeypatch.setenv("PGKB_OPENAI_GENERATORS", generators_env(fake.url, timeout=0.5))
    fake.clear()
    return fake


def config(kb: str, model: str = "pgkb.extractive", **kbc: Any) -> dict[str, Any]:
    return {"type": "KNOWLEDGE_BASE",
            "knowledgeBaseConfiguration": {"knowledgeBaseId": kb, "modelArn": model, **kbc}}


def ask(svc: Any, kb: str, text: str, **kw: Any) -> dict[str, Any]:
    model = kw.pop("model", "pgkb.extractive")
    session = kw.pop("sessionId", None)
    extra = {"sessionId": session} if session else {}
    return svc.retrieve_and_generate(input={"text": text}, retrieveAndGenerateConfiguration=config(kb, model, **kw),
                                     **extra)


def check_citations(resp: dict[str, Any]) -> None:
    """Every span is the exact text of its part, and that text is in every chunk it cites."""
    text = resp["output"]["text"]
    assert resp["citations"], resp
    for c in resp["citations"]:
        part = c["generatedResponsePart"]["textResponsePart"]
        span = part["span"]
        assert text[span["start"] : span["end"]] == part["text"]
        assert c["retrievedReferences"]
        for ref in c["retrievedReferences"]:
            assert "score" not in ref and ref["content"]["type"] == "TEXT" and ref["location"]["type"] == "CUSTOM"
            assert part["text"] in ref["content"]["text"]


# ------------------------------------------------------------------------------ the extractive generator


def test_extractive_answer_is_cited_sentences_of_the_chunks(svc: Any, kb: str) -> None:
    resp = ask(svc, kb, "When was the Eiffel Tower completed?")
    assert "completed in 1889" in resp["output"]["text"]
    assert re.fullmatch(r"[0-9a-zA-Z._:-]{2,100}", resp["sessionId"])
    assert resp["ResponseMetadata"]["HTTPHeaders"]["x-pgkb-generator"] == "extractive"
    check_citations(resp)
    # each cited part is one whole sentence of its chunk, and together they are the whole answer
    parts = [c["generatedResponsePart"]["textResponsePart"]["text"] for c in resp["citations"]]
    assert " ".join(parts) == resp["output"]["text"]
    assert {c["retrievedReferences"][0]["location"]["customDocumentLocation"]["id"] for c in resp["citations"]} == {"eiffel"}


def test_extractive_options_and_no_results(svc: Any, kb: str) -> None:
    one = ask(svc, kb, "How do you bake bread?",
              generationConfiguration={"additionalModelRequestFields": {"maxSentences": 1}})
    assert len(one["citations"]) == 1
    check_citations(one)
    with pytest.raises(ValidationError, match="maxSentences"):
        ask(svc, kb, "bread", generationConfiguration={"additionalModelRequestFields": {"maxSentences": 50}})
    empty = new_kb(svc, {})
    resp = ask(svc, empty, "anything at all?")
    assert resp["output"]["text"] == "Sorry, I am unable to assist you with this request."
    assert resp["citations"] == []


def test_stream_events_add_up_to_the_answer(svc: Any, kb: str) -> None:
    question = "Where do penguins live and how deep can they dive?"
    whole = ask(svc, kb, question)
    out = svc.retrieve_and_generate_stream(input={"text": question}, retrieveAndGenerateConfiguration=config(kb))
    assert out["sessionId"] != whole["sessionId"]
    text = ""
    cites = []
    for event in out["stream"]:
        (kind, payload), = event.items()
        if kind == "output":
            text += payload["text"]
        else:
            assert kind == "citation"
            assert payload["citation"]["generatedResponsePart"] == payload["generatedResponsePart"]
            cites.append(payload)
            span = payload["generatedResponsePart"]["textResponsePart"]["span"]
            assert len(text) == span["end"]  # the cited part was sent just before its citation
    assert text == whole["output"]["text"]
    check_citations({"output": {"text": text}, "citations": cites})


# ------------------------------------------------------------------------------ sessions


def test_follow_up_is_rewritten_with_the_session(svc: Any, kb: str) -> None:
    first = ask(svc, kb, "When was the Eiffel Tower completed?")
    follow = ask(svc, kb, "How tall is it?", sessionId=first["sessionId"])
    assert follow["sessionId"] == first["sessionId"]
    assert "330 metres" in follow["output"]["text"]
    check_citations(follow)
    with svc.db.connection() as conn:
        turns = conn.execute(
            "SELECT turn, question, rewritten, answer FROM pgkb.rag_turns WHERE session_id = %s ORDER BY turn",
            (first["sessionId"],),
        ).fetchall()
    assert [t[0] for t in turns] == [1, 2]
    assert turns[1][1] == "How tall is it?" and "Eiffel" in turns[1][2] and turns[1][2].endswith("How tall is it?")
    assert turns[1][3] == follow["output"]["text"]


def test_unusable_sessions_are_validation_errors(svc: Any, kb: str) -> None:
    with pytest.raises(ValidationError, match="not valid"):
        ask(svc, kb, "How tall is it?", sessionId="no-such-session")
    with pytest.raises(ValidationError, match="sessionId"):
        ask(svc, kb, "How tall is it?", sessionId="bad id!")
    first = ask(svc, kb, "When was the Eiffel Tower completed?")
    other = new_kb(svc, {"x": "Another knowledge base with one sentence in it."})
    with pytest.raises(ValidationError, match="belongs to knowledge base"):
        ask(svc, other, "and this?", sessionId=first["sessionId"])
    with svc.db.connection() as conn:
        conn.execute("UPDATE pgkb.rag_sessions SET expires_at = now() - interval '1 second' WHERE id = %s",
                     (first["sessionId"],))
    with pytest.raises(ValidationError, match="expired"):
        ask(svc, kb, "How tall is it?", sessionId=first["sessionId"])


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"input": {"text": "x" * 1001}}, ValidationError, "limit is 1000"),
        ({"input": {"text": "   "}}, ValidationError, "blank"),
        ({"cfg": {"type": "EXTERNAL_SOURCES"}}, ValidationError, "EXTERNAL_SOURCES"),
        ({"cfg": {"type": "WEB"}}, ValidationError, "KNOWLEDGE_BASE"),
        ({"kbc": {"generationConfiguration": {"promptTemplate": {"textPromptTemplate": "Answer: $query$"}}}},
         ValidationError, r"\$search_results\$"),
        ({"kbc": {"generationConfiguration": {"inferenceConfig": {"textInferenceConfig": {"temperature": 2}}}}},
         ValidationError, "temperature"),
        ({"kbc": {"generationConfiguration": {"guardrailConfiguration": {"guardrailId": "g", "guardrailVersion": "1"}}}},
         ValidationError, "guardrail"),
        ({"kbc": {"orchestrationConfiguration": {"promptTemplate": {"textPromptTemplate": "$query$"}}}},
         ValidationError, "conversation_history"),
        ({"session_config": {"kmsKeyArn": "arn:aws:kms:us-east-1:000000000000:key/k"}}, ValidationError, "KMS"),
        ({"kb": "NOSUCHKB00"}, NotFoundError, "NOSUCHKB00"),
        ({"kb": "not-an-id"}, ValidationError, "knowledgeBaseId"),
    ],
)
def test_bad_requests(svc: Any, kb: str, kwargs: dict[str, Any], error: type[PgkbError], needle: str) -> None:
    cfg = kwargs.get("cfg") or config(kwargs.get("kb", kb), **kwargs.get("kbc", {}))
    call: dict[str, Any] = {"input": kwargs.get("input", {"text": "When was the tower completed?"}),
                            "retrieveAndGenerateConfiguration": cfg}
    if "session_config" in kwargs:
        call["sessionConfiguration"] = kwargs["session_config"]
    with pytest.raises(error, match=needle):
        svc.retrieve_and_generate(**call)
    with pytest.raises(error, match=needle):
        svc.retrieve_and_generate_stream(**call)


def no_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "PGKB_BEDROCK_ENDPOINT_URL", "PGKB_OPENAI_GENERATORS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_unconfigured_model_arn_is_a_validation_error(svc: Any, kb: str, monkeypatch: pytest.MonkeyPatch) -> None:
    no_aws(monkeypatch)
    with pytest.raises(ValidationError, match="pgkb.extractive"):
        ask(svc, kb, "When was the tower completed?", model="anthropic.claude-3-haiku-20240307-v1:0")


# ------------------------------------------------------------------------------ OpenAI-compatible endpoints


def test_openai_prompt_search_results_history_and_marker_citations(svc: Any, kb: str, llm: FakeModel) -> None:
    def reply(body: dict[str, Any]) -> str:
        last = body["messages"][-1]["content"]
        if "Latest question:" in last:  # the rewrite call
            return "How tall is the Eiffel Tower?\n"
        return "The tower was finished in 1889 [1]. It stands 330 metres tall [1][2]. Nothing else [7]."

    llm.reply = reply
    template = "You are terse.\nResults:\n$search_results$\n$output_format_instructions$"
    first = ask(svc, kb, "When was the Eiffel Tower completed?", model="fake.ok",
                generationConfiguration={"promptTemplate": {"textPromptTemplate": template},
                                         "inferenceConfig": {"textInferenceConfig": {"temperature": 0.1, "maxTokens": 200}},
                                         "additionalModelRequestFields": {"seed": 7}},
                retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 2}})
    assert first["ResponseMetadata"]["HTTPHeaders"]["x-pgkb-generator"] == "openai-compatible"
    path, body = llm.requests[-1]
    assert path == "/ok/v1/chat/completions"
    assert body["model"] == "m-ok" and body["temperature"] == 0.1 and body["max_tokens"] == 200 and body["seed"] == 7
    system, user = body["messages"]
    assert system["role"] == "system" and system["content"].startswith("You are terse.\nResults:\n[1]")
    assert DOCS["eiffel"] in system["content"] and "square brackets" in system["content"]
    assert user == {"role": "user", "content": "When was the Eiffel Tower completed?"}
    # markers are gone, each sentence cites what its markers named, an out-of-range number cites nothing
    assert first["output"]["text"] == "The tower was finished in 1889. It stands 330 metres tall. Nothing else."
    spans_ = [(c["generatedResponsePart"]["textResponsePart"]["text"], len(c["retrievedReferences"]))
              for c in first["citations"]]
    assert spans_ == [("The tower was finished in 1889.", 1), ("It stands 330 metres tall.", 2)]
    for c in first["citations"]:
        s = c["generatedResponsePart"]["textResponsePart"]["span"]
        assert first["output"]["text"][s["start"] : s["end"]] == c["generatedResponsePart"]["textResponsePart"]["text"]

    llm.clear()
    ask(svc, kb, "And how tall is it?", model="fake.ok", sessionId=first["sessionId"])
    (rpath, rewrite), (_, gen) = llm.requests
    assert "User: When was the Eiffel Tower completed?\nAssistant: The tower was finished in 1889." in rewrite[
        "messages"][0]["content"]
    assert "Latest question: And how tall is it?" in rewrite["messages"][0]["content"]
    # the generation call carries the history as earlier turns and the user's own words last
    roles = [(m["role"], m["content"]) for m in gen["messages"][1:]]
    assert roles == [("user", "When was the Eiffel Tower completed?"), ("assistant", first["output"]["text"]),
                     ("user", "And how tall is it?")]
    with svc.db.connection() as conn:
        rewritten = conn.execute("SELECT rewritten FROM pgkb.rag_turns WHERE session_id = %s AND turn = 2",
                                 (first["sessionId"],)).fetchone()[0]
    assert rewritten == "How tall is the Eiffel Tower?"


def test_openai_template_with_query_and_fallback_citation(svc: Any, kb: str, llm: FakeModel) -> None:
    llm.reply = lambda body: "Bread needs flour, water, yeast and salt."
    resp = ask(svc, kb, "What goes into bread?", model="fake.ok",
               generationConfiguration={"promptTemplate": {"textPromptTemplate": "Q: $query$\nR: $search_results$"}},
               retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 3}})
    (_, body), = llm.requests
    assert len(body["messages"]) == 1 and body["messages"][0]["content"].startswith("Q: What goes into bread?\nR: [1]")
    # the model gave no markers: the whole answer cites every result it was given
    (c,) = resp["citations"]
    assert c["generatedResponsePart"]["textResponsePart"]["span"] == {"start": 0, "end": len(resp["output"]["text"])}
    assert len(c["retrievedReferences"]) == 3


@pytest.mark.parametrize(
    ("model", "error", "needle"),
    [
        ("fake.fail500", BadGatewayError, "HTTP 500"),
        ("fake.fail400", DependencyFailedError, "HTTP 400"),
        ("fake.garbage", DependencyFailedError, "did not answer JSON"),
        ("fake.slow", BadGatewayError, "within 0.5 s"),
        ("fake.down", BadGatewayError, "cannot reach"),
    ],
)
def test_failing_endpoints(svc: Any, kb: str, llm: FakeModel, model: str, error: type[PgkbError], needle: str) -> None:
    with pytest.raises(error, match=needle) as info:
        ask(svc, kb, "When was the tower completed?", model=model)
    assert info.value.resourceName == model  # type: ignore[attr-defined]
    # in the stream, the same failure comes out of the event iterator (the server frames it)
    out = svc.retrieve_and_generate_stream(input={"text": "bread?"}, retrieveAndGenerateConfiguration=config(kb, model))
    with pytest.raises(error, match=needle):
        list(out["stream"])


def test_bedrock_converse_through_the_endpoint_override(svc: Any, kb: str, fake: FakeModel,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    no_aws(monkeypatch)
    monkeypatch.setenv("PGKB_BEDROCK_ENDPOINT_URL", f"{fake.url}/ok")
    fake.clear()
    fake.reply = lambda body: "It was completed in 1889 [1]."
    model = "anthropic.claude-3-haiku-20240307-v1:0"
    resp = ask(svc, kb, "When was the Eiffel Tower completed?", model=model,
               generationConfiguration={"inferenceConfig": {"textInferenceConfig": {"maxTokens": 100, "topP": 0.9}}})
    assert resp["output"]["text"] == "It was completed in 1889."
    assert resp["ResponseMetadata"]["HTTPHeaders"]["x-pgkb-generator"] == "bedrock-converse"
    (path, body), = fake.requests
    assert unquote(path) == f"/ok/model/{model}/converse"
    assert body["inferenceConfig"] == {"maxTokens": 100, "topP": 0.9}
    assert DOCS["eiffel"] in body["system"][0]["text"]
    assert body["messages"] == [{"role": "user", "content": [{"text": "When was the Eiffel Tower completed?"}]}]
    monkeypatch.setenv("PGKB_BEDROCK_ENDPOINT_URL", f"{fake.url}/fail500")
    with pytest.raises(BadGatewayError):
        ask(svc, kb, "When was the Eiffel Tower completed?", model=model)


# ------------------------------------------------------------------------------ pieces


def test_marker_parsing() -> None:
    segs = segments_from_markers("A is one [1]. B is two [2, 3]!\nC has none.", 3)
    text = "".join(s.text for s in segs)
    assert text == "A is one. B is two!\nC has none."
    assert [(text[a:b], s.sources) for a, b, s in spans(segs)] == [("A is one.", (0,)), ("B is two!", (1, 2))]
    only_bad = segments_from_markers("Answer [9].", 2)
    assert [(s.text, s.sources) for s in only_bad] == [("Answer.", (0, 1))]


def test_deterministic_rewrite() -> None:
    prev = ["When was the Eiffel Tower completed?"]
    assert rewrite_follow_up("How tall is it?", prev) == "Eiffel Tower completed: How tall is it?"
    long_q = "What is the capital city of France and its population today?"
    assert rewrite_follow_up(long_q, prev).endswith(long_q) and "Eiffel" in rewrite_follow_up(long_q, prev)
    standalone = "Which volcano in Europe erupts most often these days?"
    assert rewrite_follow_up("Which volcanoes are active in southern Europe today?", prev) == (
        "Which volcanoes are active in southern Europe today?")
    assert rewrite_follow_up(standalone, []) == standalone
    assert render("$query$ / $search_results$", {"query": "$search_results$", "search_results": "R"}) == "$search_results$ / R"


def test_extractive_answer_embeds_only_the_question(svc: Any, kb: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The offline generator scores sentences without the model: one RetrieveAndGenerate call embeds
    the question once (for retrieval) and nothing else."""
    model = svc.resolve(kb).model()  # the registry's shared instance, the one the service calls
    calls: list[tuple[str, int]] = []
    for name in ("embed_queries", "embed_documents"):
        real = getattr(model, name)

        def counted(texts: Any, *a: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
            texts = list(texts)
            calls.append((_name, len(texts)))
            return _real(texts, *a, **kw)

        monkeypatch.setattr(model, name, counted)
    resp = ask(svc, kb, "When was the Eiffel Tower completed?")
    check_citations(resp)
    assert "1889" in resp["output"]["text"]
    assert calls == [("embed_queries", 1)]


def test_extractive_answers_long_chunks_without_a_model_call() -> None:
    from pgkb.generation.base import GenerationRequest
    from pgkb.generation.extractive import ExtractiveGenerator

    filler = " ".join(f"Filler sentence number {i} talks about nothing in particular." for i in range(40))
    chunk = filler + " The lighthouse keeper lit the lamp at dusk every evening. " + filler
    other = "Lamps were once lit with whale oil. A keeper lived in the lighthouse."
    results = [{"content": {"text": chunk, "type": "TEXT"}, "location": {"type": "CUSTOM"}, "score": 0.6},
               {"content": {"text": other, "type": "TEXT"}, "location": {"type": "CUSTOM"}, "score": 0.5}]
    answer = ExtractiveGenerator().generate(GenerationRequest(
        "When did the lighthouse keeper light the lamp?", results))
    cited = [s for s in answer.segments if s.sources]
    assert cited[0].text == "The lighthouse keeper lit the lamp at dusk every evening."
    assert cited[0].sources == (0,)
    assert all(s.text in results[s.sources[0]]["content"]["text"] for s in cited)
    assert not any(s.text.startswith("Filler") for s in cited)


def test_sentence_support_prefers_the_asked_for_words() -> None:
    from pgkb.generation.support import chunk_prior, lexical_support, stem

    assert stem("completed") == stem("complete") == stem("completing")
    assert stem("volcanoes") == stem("volcano") and stem("berries") == stem("berry")
    texts = ["The Eiffel Tower is in Paris.", "The tower was completed in 1889.",
             "The Eiffel Tower is made of iron.", "Penguins cannot fly."]
    lex = lexical_support("When was the Eiffel Tower completed?", texts)
    # the rarer asked-for word outweighs the subject's words that every other sentence repeats
    assert lex[1] > lex[0] > lex[2] > lex[3] == 0.0
    # word pairs adjacent in the question count more when they stay adjacent
    pair = lexical_support("red wine", ["A red wine from Spain.", "Wine, white or red, from Spain."])
    assert pair[0] > pair[1]
    assert lexical_support("the of and", texts).tolist() == [0.0] * 4
    assert chunk_prior([0.8, 0.4]).tolist() == [1.0, 0.5]
    assert chunk_prior([None, None]).tolist() == [1.0, 0.5]  # no scores: by rank
