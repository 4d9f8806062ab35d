"""AgenticRetrieveStream through the service: the offline planner over two MANAGED knowledge bases,
ACLs at every step, retrievalOverrides, maxAgentIteration, generateResponse, multi-turn messages,
full document expansion, request validation; and the question splitter on its own."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from helpers.acl import custom_source, inline_doc, managed_kb
from test_generation import new_kb

from pgkb.agentic.split import split_question
from pgkb.config import Settings
from pgkb.errors import NotFoundError, ValidationError
from pgkb.service import KnowledgeBaseService

ANN = "ann@example.com"
FLEET = {
    "harbor": "The Harbor service listens on port 7431. Harbor restarts itself within ten seconds after a crash.",
    "lantern": "Lantern signing keys are rotated every 90 days by the security team.",
    "orchard": "Orchard backups run nightly at 02:00 and are kept for 30 days before deletion.",
}
PEOPLE = {
    "vacation": "Employees get 28 days of paid vacation each year, and unused days carry over to March.",
    "parking": "The parking garage opens at 6 am and parking badges are issued by reception.",
}
SECRET = "The Harbor migration plan moves the Harbor service to the Oslo datacenter in March."
LONG = " ".join(
    f"Section {i} of the Quarry handbook explains that quarry shift {i} starts at {6 + i % 12} o'clock and"
    f" ends after eight hours of work with a safety briefing number {i}." for i in range(40)
)


@pytest.fixture(scope="module")
def svc(settings: Settings) -> Iterator[KnowledgeBaseService]:
    with KnowledgeBaseService(settings) as s:
        yield s


@pytest.fixture(scope="module")
def kbs(svc: KnowledgeBaseService) -> tuple[str, str]:
    fleet, people = managed_kb(svc), managed_kb(svc)
    public, private = custom_source(svc, fleet, acl=False), custom_source(svc, fleet, acl=True)
    docs = [inline_doc(k, v) for k, v in FLEET.items()] + [inline_doc("quarry", LONG)]
    out = svc.ingest_knowledge_base_documents(knowledgeBaseId=fleet, dataSourceId=public, documents=docs)
    assert {d["status"] for d in out["documentDetails"]} == {"INDEXED"}
    out = svc.ingest_knowledge_base_documents(knowledgeBaseId=fleet, dataSourceId=private,
                                              documents=[inline_doc("harbor-plan", SECRET, [(ANN, "ALLOW")])])
    assert {d["status"] for d in out["documentDetails"]} == {"INDEXED"}
    ds2 = custom_source(svc, people, acl=False)
    out = svc.ingest_knowledge_base_documents(knowledgeBaseId=people, dataSourceId=ds2,
                                              documents=[inline_doc(k, v) for k, v in PEOPLE.items()])
    assert {d["status"] for d in out["documentDetails"]} == {"INDEXED"}
    return fleet, people


def retriever(kb: str, **overrides: Any) -> dict[str, Any]:
    kbc: dict[str, Any] = {"knowledgeBaseId": kb}
    if overrides:
        kbc["retrievalOverrides"] = overrides
    return {"configuration": {"knowledgeBase": kbc}}


def run(svc: KnowledgeBaseService, question: str | list[dict[str, Any]], kbs: list[str] | list[dict[str, Any]],
        **kw: Any) -> list[dict[str, Any]]:
    messages = [{"role": "user", "content": {"text": question}}] if isinstance(question, str) else question
    rets = [retriever(k) if isinstance(k, str) else k for k in kbs]
    kw.setdefault("agenticRetrieveConfiguration", {})
    return list(svc.agentic_retrieve_stream(messages=messages, retrievers=rets, **kw)["stream"])


def traces(events: list[dict[str, Any]], step: str | None = None) -> list[dict[str, Any]]:
    return [e["traceEvent"]["attributes"] for e in events
            if "traceEvent" in e and (step is None or e["traceEvent"]["attributes"]["step"] == step)]


def result(events: list[dict[str, Any]]) -> dict[str, Any]:
    assert "result" in events[-1], "the result event comes last"
    return events[-1]["result"]  # type: ignore[no-any-return]


def sources(res: dict[str, Any]) -> list[tuple[str, str]]:
    return [(r["sourceRetriever"]["identifier"], r["metadata"]["x-amz-bedrock-kb-source-uri"]) for r in res["results"]]


def check_citations(res: dict[str, Any]) -> None:
    """Every citation's span is literally in each result it references."""
    answer = res["generatedResponse"]["answer"]
    assert res["generatedResponse"]["citations"]
    for c in res["generatedResponse"]["citations"]:
        part = answer[c["startIndex"]:c["endIndex"]]
        assert part.strip() == part and part
        for ref in c["references"]:
            assert part in res["results"][ref["resultIndex"]]["content"]["text"]


# ------------------------------------------------------------------------------------ the splitter


@pytest.mark.parametrize(("question", "parts"), [
    ("What port does Harbor listen on and how many vacation days do employees get?",
     ["What port does Harbor listen on", "How many vacation days do employees get?"]),
    ("When do Orchard backups run? Who issues parking badges?",
     ["When do Orchard backups run?", "Who issues parking badges?"]),
    ("What is the default chunk size of FIXED_SIZE vs HIERARCHICAL chunking?",
     ["What is the default chunk size of FIXED_SIZE?", "What is the default chunk size of HIERARCHICAL chunking?"]),
    ("Which is faster, HTTP/2 or HTTP/1.1?", ["Which is faster: HTTP/2?", "Which is faster: HTTP/1.1?"]),
    ("Which embedding model is the default, and which generator works offline?",
     ["Which embedding model is the default", "Which generator works offline?"]),
    ("How do secrets and keys work?", ["How do secrets and keys work?"]),  # a noun pair is not two questions
    ("What is pgkb?", ["What is pgkb?"]),
])
def test_split_question(question: str, parts: list[str]) -> None:
    assert split_question(question) == parts


# ------------------------------------------------------------------------------------ the operation


def test_compound_question_over_two_knowledge_bases(svc: KnowledgeBaseService, kbs: tuple[str, str]) -> None:
    fleet, people = kbs
    q = "What port does the Harbor service listen on and how many days of paid vacation do employees get?"
    events = run(svc, q, [retriever(fleet, maxNumberOfResults=2), retriever(people, maxNumberOfResults=2)])
    steps = [(t["step"], t["status"]) for t in traces(events)]
    assert steps[:2] == [("SpeculativeRetrieval", "IN_PROGRESS"), ("SpeculativeRetrieval", "SUCCEEDED")]
    assert ("Planning", "SUCCEEDED") in steps and ("Retrieval", "SUCCEEDED") in steps
    assert ("FullDocumentExpansion", "SUCCEEDED") in steps
    plan = [t for t in traces(events, "Planning") if t["status"] == "SUCCEEDED"][0]
    asked = [a["retrieve"]["inputQuery"]["text"] for a in plan["actions"]]
    assert len(asked) == 2 and "Harbor" in asked[0] and "vacation" in asked[1]
    assert all({s["identifier"] for s in a["retrieve"]["sourceRetrievers"]} == {fleet, people} for a in plan["actions"])
    ids = [e["traceEvent"]["id"] for e in events if "traceEvent" in e]
    assert len(set(ids)) == len(ids)
    res = result(events)
    found = sources(res)
    assert (fleet, "harbor") in found and (people, "vacation") in found
    assert sum(1 for k, _ in found if k == fleet) <= 2 and sum(1 for k, _ in found if k == people) <= 2
    assert len(set(found)) == len(found)  # deduplicated across sub-queries
    assert all(r["content"]["mimeType"] == "text/plain" for r in res["results"])
    answer = res["generatedResponse"]["answer"]
    assert "7431" in answer and "28 days" in answer
    assert "".join(e["responseEvent"]["text"] for e in events if "responseEvent" in e) == answer
    check_citations(res)


def test_acls_apply_at_every_step(svc: KnowledgeBaseService, kbs: tuple[str, str]) -> None:
    fleet, people = kbs
    q = "Where is the Harbor service moving in the migration plan and when do Orchard backups run?"
    for user in (None, "ben@example.com"):
        kw = {"userContext": {"userId": user}} if user else {}
        events = run(svc, q, [fleet, people], **kw)
        assert "Oslo" not in json.dumps(events)  # no trace, result or answer holds the hidden document
        assert (fleet, "harbor-plan") not in sources(result(events))
    events = run(svc, q, [fleet, people], userContext={"userId": ANN})
    res = result(events)
    assert (fleet, "harbor-plan") in sources(res)
    assert "Oslo" in res["generatedResponse"]["answer"]
    expanded = [a["fullDocumentExpansion"]["documentId"] for t in traces(events, "FullDocumentExpansion")
                for a in t.get("actions", [])]
    assert expanded  # the best document was read whole, for the user who may see it


def test_not_compound_answers_from_the_speculative_retrieval(svc: KnowledgeBaseService, kbs: tuple[str, str]) -> None:
    fleet, people = kbs
    events = run(svc, "How often are Lantern signing keys rotated?", [fleet, people])
    assert [t["status"] for t in traces(events, "Retrieval")] == []
    plan = [t for t in traces(events, "Planning") if t["status"] == "SUCCEEDED"]
    assert len(plan) == 1 and "not compound" in plan[0]["message"]
    res = result(events)
    assert sources(res)[0] == (fleet, "lantern")
    assert "90 days" in res["generatedResponse"]["answer"]
    check_citations(res)


def test_overrides_iterations_and_generate_response(svc: KnowledgeBaseService, kbs: tuple[str, str]) -> None:
    fleet, people = kbs
    q = "When do Orchard backups run and who issues parking badges?"
    # A filter on one retriever: only that document can come from it; maxNumberOfResults caps it.
    only = {"equals": {"key": "x-amz-bedrock-kb-source-uri", "value": "lantern"}}
    events = run(svc, q, [retriever(fleet, filter=only, maxNumberOfResults=1), retriever(people, maxNumberOfResults=1)])
    found = sources(result(events))
    assert [u for k, u in found if k == fleet] == ["lantern"]
    assert len([u for k, u in found if k == people]) == 1
    # maxAgentIteration 0: the speculative retrieval only, no planning.
    events = run(svc, q, [fleet, people], agenticRetrieveConfiguration={"maxAgentIteration": 0})
    assert {t["step"] for t in traces(events)} <= {"SpeculativeRetrieval", "FullDocumentExpansion"}
    # generateResponse false: no responseEvent, no generatedResponse.
    events = run(svc, q, [fleet, people], generateResponse=False)
    assert not any("responseEvent" in e for e in events)
    assert "generatedResponse" not in result(events) and result(events)["results"]


def test_follow_up_message_is_made_self_contained(svc: KnowledgeBaseService, kbs: tuple[str, str]) -> None:
    fleet, people = kbs
    messages = [
        {"role": "user", "content": {"text": "What port does the Harbor service listen on?"}},
        {"role": "assistant", "content": {"text": "Port 7431."}},
        {"role": "user", "content": {"text": "What does it do after a crash?"}},
    ]
    events = run(svc, messages, [fleet, people])
    spec = traces(events, "SpeculativeRetrieval")[0]
    assert "Harbor" in spec["actions"][0]["retrieve"]["inputQuery"]["text"]
    res = result(events)
    assert sources(res)[0] == (fleet, "harbor")
    assert "restarts itself" in res["generatedResponse"]["answer"]


def test_full_document_expansion_replaces_chunks(svc: KnowledgeBaseService, kbs: tuple[str, str]) -> None:
    fleet, _ = kbs
    events = run(svc, "When does quarry shift 7 start?", [retriever(fleet, maxNumberOfResults=5)])
    res = result(events)
    quarry = [r for r in res["results"] if r["metadata"]["x-amz-bedrock-kb-source-uri"] == "quarry"]
    assert len(quarry) == 1  # several chunks matched; the whole document replaces them
    assert quarry[0]["content"]["text"] == LONG and quarry[0]["metadata"]["x-pgkb-full-document"] is True
    check_citations(res)


def test_request_validation(svc: KnowledgeBaseService, kbs: tuple[str, str]) -> None:
    fleet, people = kbs
    q = "What port does Harbor use?"
    with pytest.raises(NotFoundError):
        run(svc, q, ["NOSUCHKB1"])
    with pytest.raises(ValidationError, match="limit is 5"):
        run(svc, q, [fleet] * 6)
    with pytest.raises(ValidationError, match="role user"):
        run(svc, [{"role": "user", "content": {"text": q}}, {"role": "assistant", "content": {"text": "7431"}}], [fleet])
    with pytest.raises(ValidationError, match="blank"):
        run(svc, "   ", [fleet])
    with pytest.raises(ValidationError, match="nextToken"):
        run(svc, q, [fleet], nextToken="abc")
    with pytest.raises(ValidationError, match="guardrails"):
        run(svc, q, [fleet], policyConfiguration={"bedrockGuardrailConfiguration": {"guardrailId": "g", "guardrailVersion": "1"}})
    with pytest.raises(ValidationError, match="maxAgentIteration"):
        run(svc, q, [fleet], agenticRetrieveConfiguration={"maxAgentIteration": 11})
    with pytest.raises(ValidationError, match="maxNumberOfResults"):
        run(svc, q, [retriever(fleet, maxNumberOfResults=0)])
    with pytest.raises(ValidationError, match="filter"):
        run(svc, q, [retriever(fleet, filter={"nonsense": 1})])
    with pytest.raises(ValidationError, match="foundationModelConfiguration"):
        run(svc, q, [fleet], agenticRetrieveConfiguration={"foundationModelType": "CUSTOM"})
    with pytest.raises(ValidationError, match="MANTLE"):
        run(svc, q, [fleet], agenticRetrieveConfiguration={
            "foundationModelType": "CUSTOM", "foundationModelConfiguration": {
                "type": "MANTLE_FOUNDATION_MODEL",
                "mantleFoundationModelConfiguration": {"modelConfiguration": {"modelArn": "m"}}}})
    with pytest.raises(ValidationError, match="rerankingConfiguration"):
        run(svc, q, [fleet], agenticRetrieveConfiguration={"rerankingModelType": "CUSTOM"})
    with pytest.raises(ValidationError, match="agenticRetrieveConfiguration is required"):
        svc.agentic_retrieve_stream(messages=[{"role": "user", "content": {"text": q}}], retrievers=[retriever(fleet)],
                                    agenticRetrieveConfiguration=None)  # type: ignore[arg-type]
    plain = new_kb(svc, {})
    with pytest.raises(ValidationError, match="only on MANAGED"):
        run(svc, q, [fleet, plain])


def test_cli_ask_agentic(settings: Settings, kbs: tuple[str, str]) -> None:
    from typer.testing import CliRunner

    from pgkb.cli import app

    fleet, people = kbs
    common = ["--database-url", str(settings.database_url), "--data-dir", str(settings.data_dir)]
    res = CliRunner().invoke(app, ["ask", fleet, "What port does the Harbor service listen on and how many days of"
                                   " paid vacation do employees get?", "--agentic", "--also", people, "-k", "2", *common])
    assert res.exit_code == 0, res.output
    answer, _, listed = res.stdout.partition("\nSources:\n")
    assert "7431" in answer and "28 days" in answer and re.search(r"\[\d\]", answer)
    assert f"{fleet} harbor" in listed and f"{people} vacation" in listed
    assert "[Planning] split into 2 sub-queries" in res.stderr and "[Retrieval]" in res.stderr
    bad = CliRunner().invoke(app, ["ask", fleet, "q", "--also", people, *common])
    assert isinstance(bad.exception, ValidationError) and "--also needs --agentic" in str(bad.exception)  # main(): one line
