"""Document ACLs, attacked: nothing a user may not see ever comes back, whatever the query shape.

One MANAGED knowledge base holds an ACL-enabled CUSTOM source (documents with overlapping, disjoint,
deny-wins, missing and adversarially named ACLs) and a public source. For every user the visible set
is computed here from the ACLs the test wrote, and every answer is checked against it: every k from
1 to 100, SEMANTIC and HYBRID, filters, pagination tokens replayed by someone else, RAG answers and
citations, hierarchical parents, and ACLs changed or removed between two syncs.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.acl import (
    connector,
    custom_source,
    folder_source,
    inline_doc,
    managed_kb,
    retrieve,
    unique,
    uris,
    write_acl_sidecar,
)

from pgkb.config import Settings
from pgkb.errors import ValidationError
from pgkb.service import KnowledgeBaseService, shapes

ALICE, BOB, CAROL, DAVE = "alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com"
SQLI = "o'brien\"; DROP TABLE pgkb.documents; --@example.com"
WILD = "%"
LITERAL_PUBLIC = "public"  # a user named like pgkb's public marker must not make anything public
USERS = [ALICE, BOB, CAROL, DAVE, SQLI, WILD, LITERAL_PUBLIC]
ATTACKERS = ["ALICE@example.com", "alice@example.com ", " alice@example.com", "u:alice@example.com", "*",
             "alice@example.com' OR '1'='1", "%alice%", "{alice@example.com}", "public,alice@example.com",
             "x" * 2048, "bob@example.com\u200b"]
TOPICS = ["harbour", "glacier", "orchard", "canyon", "lagoon", "meadow"]


def _acl_for(i: int, rng: random.Random) -> list[tuple[str, str]] | None:
    """ACL of document i: a mix of single-user, overlapping, deny-wins, empty and adversarial lists."""
    kind = i % 10
    if kind == 0:
        return [(ALICE, "ALLOW")]
    if kind == 1:
        return [(BOB, "ALLOW")]
    if kind == 2:
        return [(ALICE, "ALLOW"), (BOB, "ALLOW")]
    if kind == 3:
        return [(ALICE, "ALLOW"), (BOB, "ALLOW"), (BOB, "DENY")]  # deny wins for bob
    if kind == 4:
        return [(CAROL, "ALLOW"), (ALICE, "DENY")]
    if kind == 5:
        return None  # no ACL: stored, never returned
    if kind == 6:
        return [(SQLI, "ALLOW")]
    if kind == 7:
        return [(WILD, "ALLOW"), (LITERAL_PUBLIC, "ALLOW")]
    if kind == 8:
        return [(DAVE, "DENY")]  # deny only: nobody
    users = rng.sample([ALICE, BOB, CAROL, DAVE], rng.randint(1, 3))
    return [(u, "ALLOW") for u in users]


def _visible(acl: list[tuple[str, str]] | None, user: str | None) -> bool:
    if acl is None or user is None:
        return False
    allowed = {u for u, a in acl if a == "ALLOW"}
    denied = {u for u, a in acl if a == "DENY"}
    return user in allowed and user not in denied


@pytest.fixture(scope="module")
def svc(settings: Settings) -> Iterator[KnowledgeBaseService]:
    with KnowledgeBaseService(settings) as s:
        yield s


@pytest.fixture(scope="module")
def corpus(svc: KnowledgeBaseService) -> dict[str, Any]:
    rng = random.Random(14)
    kb = managed_kb(svc)
    ds = custom_source(svc, kb, acl=True)
    pub = custom_source(svc, kb, acl=False)
    acls: dict[str, list[tuple[str, str]] | None] = {}
    docs = []
    for i in range(150):
        doc_id = f"acl-{i:03d}"
        acl = _acl_for(i, rng)
        acls[doc_id] = acl
        topic = TOPICS[i % len(TOPICS)]
        team = "secret" if i % 10 == 0 else "open"  # "secret": only documents alice alone may see
        docs.append(inline_doc(doc_id, f"Field report {i} about the {topic}: survey notes and report findings.",
                               acl, {"team": team}))
    # The best lexical match for a rare word is a document only alice may see.
    acls["acl-rare"] = [(ALICE, "ALLOW")]
    docs.append(inline_doc("acl-rare", "The xylophonequartz report: a field report with a rare word.", acls["acl-rare"],
                           {"team": "open"}))
    for i in range(0, len(docs), 25):
        out = svc.ingest_knowledge_base_documents(knowledgeBaseId=kb, dataSourceId=ds, documents=docs[i : i + 25])
        assert all(d["status"] == "INDEXED" for d in out["documentDetails"]), out
    public = [inline_doc(f"pub-{i:02d}", f"Public report {i} about the {TOPICS[i % len(TOPICS)]} field trip.")
              for i in range(20)]
    svc.ingest_knowledge_base_documents(knowledgeBaseId=kb, dataSourceId=pub, documents=public)
    return {"kb": kb, "ds": ds, "pub": pub, "acls": acls, "public": {d["content"]["custom"]["customDocumentIdentifier"]["id"] for d in public}}


def _allowed(corpus: dict[str, Any], user: str | None) -> set[str]:
    return {d for d, acl in corpus["acls"].items() if _visible(acl, user)} | corpus["public"]


@pytest.mark.parametrize("search", ["SEMANTIC", "HYBRID"])
def test_every_k_every_user(svc: KnowledgeBaseService, corpus: dict[str, Any], search: str) -> None:
    kb = corpus["kb"]
    users: list[str | None] = [*USERS, None] if search == "SEMANTIC" else [ALICE, BOB, None]
    for user in users:
        allowed = _allowed(corpus, user)
        for k in range(1, 101):
            if search == "SEMANTIC":
                got = uris(svc.retrieve(
                    knowledgeBaseId=kb, retrievalQuery={"text": "field report findings"},
                    retrievalConfiguration={"managedSearchConfiguration": {"numberOfResults": k,
                                                                           "rerankingModelType": "NONE"}},
                    **({"userContext": {"userId": user}} if user else {})))
            else:
                got = uris(retrieve(svc, kb, "field report findings", user, k=k))
            leaked = set(got) - allowed
            assert not leaked, f"{search} k={k} user={user!r} saw {sorted(leaked)}"
            assert len(got) == len(set(got))
            # Enforced before LIMIT: a selective ACL still fills k.
            assert len(got) == min(k, len(allowed)), f"{search} k={k} user={user!r}: {len(got)} of {len(allowed)}"


def test_attackers_see_only_public(svc: KnowledgeBaseService, corpus: dict[str, Any]) -> None:
    for user in ATTACKERS:
        got = set(uris(retrieve(svc, corpus["kb"], "field report", user, k=100)))
        assert got <= corpus["public"], f"{user[:40]!r} saw {sorted(got - corpus['public'])[:5]}"
        assert got == corpus["public"]
    sqli = set(uris(retrieve(svc, corpus["kb"], "field report", SQLI, k=100)))
    assert sqli == _allowed(corpus, SQLI)  # the odd name is just a name: it sees its own documents
    for bad in ("", "x" * 2049, "alice\x00@example.com", "bob\n"):
        with pytest.raises(ValidationError, match="userId"):
            retrieve(svc, corpus["kb"], "field report", bad)
    with pytest.raises(ValidationError, match="userId"):
        svc.retrieve(knowledgeBaseId=corpus["kb"], retrievalQuery={"text": "x"}, userContext={"userId": 5})  # type: ignore[dict-item]


def test_filters_matching_only_hidden_documents(svc: KnowledgeBaseService, corpus: dict[str, Any]) -> None:
    flt = {"equals": {"key": "team", "value": "secret"}}
    for search_user in (BOB, CAROL, DAVE, None, "ALICE@example.com"):
        for k in (1, 10, 100):
            assert uris(retrieve(svc, corpus["kb"], "report", search_user, k=k, flt=flt)) == []
    alice = set(uris(retrieve(svc, corpus["kb"], "report", ALICE, k=100, flt=flt)))
    assert alice and alice <= _allowed(corpus, ALICE)
    assert all(corpus["acls"][d] == [(ALICE, "ALLOW")] for d in alice)


def test_hidden_best_lexical_match_never_surfaces(svc: KnowledgeBaseService, corpus: dict[str, Any]) -> None:
    for user in (BOB, CAROL, None, "Alice@example.com"):
        for k in (1, 5, 100):
            assert "acl-rare" not in uris(retrieve(svc, corpus["kb"], "xylophonequartz", user, k=k))
    assert uris(retrieve(svc, corpus["kb"], "xylophonequartz", ALICE, k=1)) == ["acl-rare"]


def test_pagination_token_replayed_by_another_user(svc: KnowledgeBaseService, corpus: dict[str, Any]) -> None:
    """Retrieve answers its numberOfResults in one page (no nextToken, as Bedrock), but a token from an
    earlier pgkb, or a forged one, still decodes to an offset: replayed by anyone, it shows only what
    that caller may see."""
    kb = corpus["kb"]
    assert "nextToken" not in retrieve(svc, kb, "field report", ALICE, k=5)
    token = shapes.encode_token(5)
    for user in (BOB, None, ALICE):
        page = uris(retrieve(svc, kb, "field report", user, k=10, token=token))
        assert set(page) <= _allowed(corpus, user)
    seen = uris(retrieve(svc, kb, "field report", ALICE, k=60))
    assert len(seen) == 60 and set(seen) <= _allowed(corpus, ALICE)


def test_hybrid_offset_pages_past_the_candidate_count_do_not_repeat(svc: KnowledgeBaseService, corpus: dict[str, Any]) -> None:
    """MANAGED search is HYBRID, whose rankings take 50 candidates (more for a larger k). An offset
    token (an earlier pgkb's) reads into the one numberOfResults window, so a page starting past 50 is
    the tail of the same ranking: no chunk twice, none skipped."""
    kb = corpus["kb"]

    def chunks(resp: dict[str, Any]) -> list[str]:
        return [r["metadata"]["x-amz-bedrock-kb-chunk-id"] for r in resp["retrievalResults"]]

    whole = chunks(retrieve(svc, kb, "field report", ALICE, k=100))
    assert len(whole) > 60 and len(set(whole)) == len(whole)
    for offset in (50, 60):
        tail = chunks(retrieve(svc, kb, "field report", ALICE, k=100, token=shapes.encode_token(offset)))
        assert tail == whole[offset:]


def test_rag_answers_and_citations(svc: KnowledgeBaseService, corpus: dict[str, Any]) -> None:
    cfg = {"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": {
        "knowledgeBaseId": corpus["kb"], "modelArn": "pgkb.extractive",
        "retrievalConfiguration": {"managedSearchConfiguration": {"numberOfResults": 10}}}}
    for user in (BOB, None):
        out = svc.retrieve_and_generate(input={"text": "What is the xylophonequartz report?"},
                                        retrieveAndGenerateConfiguration=cfg,
                                        **({"userContext": {"userId": user}} if user else {}))
        assert "xylophonequartz" not in out["output"]["text"]
        cited = {ref["location"]["customDocumentLocation"]["id"]
                 for c in out["citations"] for ref in c["retrievedReferences"]}
        assert cited <= _allowed(corpus, user)
        events = list(svc.retrieve_and_generate_stream(
            input={"text": "What is the xylophonequartz report?"}, retrieveAndGenerateConfiguration=cfg,
            **({"userContext": {"userId": user}} if user else {}))["stream"])
        text = "".join(e["output"]["text"] for e in events if "output" in e)
        assert "xylophonequartz" not in text
        cited = {ref["location"]["customDocumentLocation"]["id"] for e in events if "citation" in e
                 for ref in e["citation"]["retrievedReferences"]}
        assert cited <= _allowed(corpus, user)
    out = svc.retrieve_and_generate(input={"text": "What is the xylophonequartz report?"},
                                    retrieveAndGenerateConfiguration=cfg, userContext={"userId": ALICE})
    assert "xylophonequartz" in out["output"]["text"]  # the one who may see it gets it


def test_hierarchical_parents_follow_their_children(svc: KnowledgeBaseService) -> None:
    kb = managed_kb(svc)
    ds = svc.create_data_source(
        knowledgeBaseId=kb, name=unique("hier"), dataSourceConfiguration=connector("CUSTOM", True),
        vectorIngestionConfiguration={"chunkingConfiguration": {
            "chunkingStrategy": "HIERARCHICAL", "hierarchicalChunkingConfiguration": {
                "levelConfigurations": [{"maxTokens": 60}, {"maxTokens": 20}], "overlapTokens": 5}}},
    )["dataSource"]["dataSourceId"]
    secret = " ".join(f"The obsidian vault protocol step {i} requires two keys and a witness." for i in range(12))
    shared = " ".join(f"The public garden schedule item {i} lists watering times for volunteers." for i in range(12))
    svc.ingest_knowledge_base_documents(knowledgeBaseId=kb, dataSourceId=ds, documents=[
        inline_doc("vault", secret, [(ALICE, "ALLOW")]), inline_doc("garden", shared, [(ALICE, "ALLOW"), (BOB, "ALLOW")])])
    for k in (1, 5, 20, 100):
        bob = retrieve(svc, kb, "obsidian vault protocol keys", BOB, k=k)
        assert set(uris(bob)) <= {"garden"}
        assert all("obsidian" not in r["content"]["text"] for r in bob["retrievalResults"])
    alice = retrieve(svc, kb, "obsidian vault protocol keys", ALICE, k=3)
    assert uris(alice)[0] == "vault" and len(alice["retrievalResults"][0]["content"]["text"]) > 100  # a parent
    svc.delete_knowledge_base(knowledgeBaseId=kb)


def test_acl_changed_between_two_syncs_and_document_moved(svc: KnowledgeBaseService, tmp_path: Path) -> None:
    acl_dir, open_dir = tmp_path / "restricted", tmp_path / "open"
    acl_dir.mkdir()
    open_dir.mkdir()
    doc = acl_dir / "merger.txt"
    doc.write_text("The quokka merger terms and the negotiated price.")
    write_acl_sidecar(doc, [(ALICE, "ALLOW")])
    kb = managed_kb(svc)
    restricted = folder_source(svc, kb, acl_dir, acl=True)
    public = folder_source(svc, kb, open_dir, acl=False)
    svc.run_ingestion_job(knowledgeBaseId=kb, dataSourceId=restricted)
    assert len(uris(retrieve(svc, kb, "quokka merger", ALICE))) == 1
    assert uris(retrieve(svc, kb, "quokka merger", BOB)) == []
    # The grant moves from alice to bob: after the next sync alice sees nothing, bob sees it.
    write_acl_sidecar(doc, [(BOB, "ALLOW")])
    job = svc.run_ingestion_job(knowledgeBaseId=kb, dataSourceId=restricted)["ingestionJob"]
    assert job["statistics"]["numberOfModifiedDocumentsIndexed"] == 0  # an ACL-only change
    assert uris(retrieve(svc, kb, "quokka merger", ALICE)) == []
    assert len(uris(retrieve(svc, kb, "quokka merger", BOB))) == 1
    check = svc.check_ingested_document_acl(knowledgeBaseId=kb, dataSourceId=restricted,
                                            documentId="file://" + str(doc.resolve()),
                                            userContext={"userId": ALICE})
    assert check == {"hasAccess": False}
    # The document moves to the public folder: the restricted copy goes, the public copy is for all.
    doc.rename(open_dir / "merger.txt")
    doc.with_name("merger.txt.metadata.json").unlink()
    svc.run_ingestion_job(knowledgeBaseId=kb, dataSourceId=restricted)
    svc.run_ingestion_job(knowledgeBaseId=kb, dataSourceId=public)
    for user in (ALICE, BOB, None):
        got = uris(retrieve(svc, kb, "quokka merger", user))
        assert [u.rsplit("/", 2)[-2] for u in got] == ["open"], got
    # Back into the restricted folder without an ACL: not ingested there, gone from the public one.
    (open_dir / "merger.txt").rename(acl_dir / "merger.txt")
    svc.run_ingestion_job(knowledgeBaseId=kb, dataSourceId=restricted)
    svc.run_ingestion_job(knowledgeBaseId=kb, dataSourceId=public)
    for user in (ALICE, BOB, None):
        assert uris(retrieve(svc, kb, "quokka merger", user)) == []
    svc.delete_knowledge_base(knowledgeBaseId=kb)


def test_get_document_content_respects_acls(svc: KnowledgeBaseService, corpus: dict[str, Any]) -> None:
    from pgkb.errors import NotFoundError
    from pgkb.service.access import document_id

    kb, ds = corpus["kb"], corpus["ds"]
    doc = document_id("acl-rare")
    ok = svc.get_document_content(knowledgeBaseId=kb, dataSourceId=ds, documentId=doc,
                                  userContext={"userId": ALICE})
    token = ok["presignedUrl"].split("/content/", 1)[1]
    assert svc.document_content_response(token)[0] == 200
    for user in (BOB, "ALICE@example.com", None):
        with pytest.raises(NotFoundError):
            svc.get_document_content(knowledgeBaseId=kb, dataSourceId=ds, documentId=doc,
                                     **({"userContext": {"userId": user}} if user else {}))
    # A URL made for one user cannot be re-signed for another: the claims are under the HMAC.
    payload, sig = token.split(".")
    import base64

    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["p"] = BOB
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=") + "." + sig
    assert svc.document_content_response(forged)[0] == 403


def test_a_session_is_its_users_alone(svc: KnowledgeBaseService, corpus: dict[str, Any]) -> None:
    cfg = {"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": {
        "knowledgeBaseId": corpus["kb"], "modelArn": "pgkb.extractive"}}
    out = svc.retrieve_and_generate(input={"text": "What is the xylophonequartz report?"},
                                    retrieveAndGenerateConfiguration=cfg, userContext={"userId": ALICE})
    assert "xylophonequartz" in out["output"]["text"]
    for user in (BOB, None):  # alice's history (her answers) is not given to anyone else
        with pytest.raises(ValidationError, match="not valid"):
            svc.retrieve_and_generate(input={"text": "And then?"}, retrieveAndGenerateConfiguration=cfg,
                                      sessionId=out["sessionId"], **({"userContext": {"userId": user}} if user else {}))
    again = svc.retrieve_and_generate(input={"text": "And then?"}, retrieveAndGenerateConfiguration=cfg,
                                      sessionId=out["sessionId"], userContext={"userId": ALICE})
    assert again["sessionId"] == out["sessionId"]
