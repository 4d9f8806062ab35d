"""`pgkb retrieve`, `pgkb ask`, `pgkb eval`: queries against knowledge bases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pgkb.cli.common import (
    BreakpointOpt,
    BufferSizeOpt,
    ChunkingOpt,
    DatabaseUrl,
    DataDir,
    JsonOut,
    MaxTokensOpt,
    OverlapOpt,
    ParentTokensOpt,
    UserOpt,
    err,
    kb_id_of,
    out,
    print_json,
    service,
    settings_for,
)
from pgkb.embeddings.registry import DEFAULT_MODEL_ID
from pgkb.errors import PgkbError, ValidationError

if TYPE_CHECKING:
    from pgkb.service import KnowledgeBaseService


def _search_config(svc: KnowledgeBaseService, kb_id: str, vsc: dict[str, Any]) -> dict[str, Any]:
    """retrievalConfiguration for a knowledge base: MANAGED ones take managedSearchConfiguration
    (pgkb picks the strategy: its HYBRID search), VECTOR ones vectorSearchConfiguration."""
    if svc.resolve(kb_id).managed:
        return {"managedSearchConfiguration": {k: v for k, v in vsc.items() if k in ("numberOfResults", "filter")}}
    return {"vectorSearchConfiguration": vsc}


def retrieve(
    kb: str,
    query: str,
    k: Annotated[int, typer.Option("-k", "--k", help="Number of results (1-100).")] = 5,
    filter: Annotated[str | None, typer.Option(help="A Bedrock RetrievalFilter as JSON.")] = None,
    hybrid: Annotated[bool, typer.Option(help="Hybrid (lexical + semantic) search.")] = False,
    user: UserOpt = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Ranked chunks for a query, with score, source and metadata."""
    vsc: dict[str, Any] = {"numberOfResults": k}
    if filter:
        try:
            vsc["filter"] = json.loads(filter)
        except json.JSONDecodeError as exc:
            raise PgkbError(f"--filter is not valid JSON: {exc.msg}") from None
    if hybrid:
        vsc["overrideSearchType"] = "HYBRID"
    with service(database_url, data_dir) as svc:
        kb_id = kb_id_of(svc, kb)
        res = svc.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": query},
                           retrievalConfiguration=_search_config(svc, kb_id, vsc),
                           userContext={"userId": user} if user is not None else None)["retrievalResults"]
    if as_json:
        return print_json(res)
    if not res:
        out.print("no results")
    for i, r in enumerate(res, 1):
        md = r.get("metadata", {})
        src = md.get("x-amz-bedrock-kb-source-uri", "")
        out.print(f"[bold]{i}.[/] score {r['score']:.4f}  [cyan]{src}[/]", highlight=False)
        extra = {k2: v for k2, v in md.items() if not k2.startswith(("x-amz-bedrock-kb-", "x-pgkb-"))}
        if extra:
            out.print(f"   metadata: {json.dumps(extra)}", highlight=False)
        text = " ".join(r["content"]["text"].split())
        out.print(f"   {text[:400]}{'…' if len(text) > 400 else ''}", highlight=False)


def ask(
    kb: str,
    question: str,
    session: Annotated[str | None, typer.Option("--session", help="Continue this conversation (a sessionId).")] = None,
    model: Annotated[str, typer.Option("--model", help="Generator modelArn: pgkb.extractive (offline), a "
                                       "PGKB_OPENAI_GENERATORS key, or a Bedrock model.")] = "pgkb.extractive",
    k: Annotated[int, typer.Option("-k", "--k", help="Chunks to retrieve (1-100).")] = 5,
    hybrid: Annotated[bool, typer.Option(help="Hybrid (lexical + semantic) search.")] = False,
    user: UserOpt = None,
    agentic: Annotated[bool, typer.Option("--agentic", help="AgenticRetrieveStream: split the question, retrieve "
                                          "per part from every knowledge base (MANAGED only), read the best "
                                          "documents whole.")] = False,
    also: Annotated[list[str] | None, typer.Option("--also", help="With --agentic: another knowledge base to "
                                                   "retrieve from (repeatable, up to 5 in all).")] = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Answer a question from a knowledge base (RetrieveAndGenerate, or --agentic) with numbered citations."""
    if agentic or also:
        from pgkb.cli import agentic_view

        if not agentic or session or hybrid:
            raise ValidationError("--also needs --agentic; --session and --hybrid do not apply to --agentic")
        with service(database_url, data_dir) as svc:
            ids = [kb_id_of(svc, x) for x in [kb, *(also or [])]]
            resp = svc.agentic_retrieve_stream(**agentic_view.request(ids, question, model, k, user))
            agentic_view.show(resp["stream"], out, err, as_json)
        return
    vsc: dict[str, Any] = {"numberOfResults": k}
    if hybrid:
        vsc["overrideSearchType"] = "HYBRID"
    with service(database_url, data_dir) as svc:
        kb_id = kb_id_of(svc, kb)
        kbc = {"knowledgeBaseId": kb_id, "modelArn": model,
               "retrievalConfiguration": _search_config(svc, kb_id, vsc)}
        res = svc.retrieve_and_generate(
            input={"text": question}, retrieveAndGenerateConfiguration={"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": kbc},
            sessionId=session or None,
            userContext={"userId": user} if user is not None else None,
        )
    if as_json:
        return print_json(res)
    text = res["output"]["text"]
    numbers: dict[tuple[str, str], int] = {}
    sources: list[dict[str, Any]] = []
    marks: list[tuple[int, str]] = []
    for c in res.get("citations", []):
        nums = []
        for ref in c["retrievedReferences"]:
            key = ((ref.get("metadata") or {}).get("x-amz-bedrock-kb-chunk-id") or "", ref["content"]["text"])
            if key not in numbers:
                numbers[key] = len(sources) + 1
                sources.append(ref)
            nums.append(numbers[key])
        end = c["generatedResponsePart"]["textResponsePart"]["span"]["end"]
        marks.append((end, "".join(f"[{n}]" for n in sorted(set(nums)))))
    shown, pos = "", 0
    for end, mark in sorted(marks):
        shown += text[pos:end] + mark
        pos = end
    out.print(shown + text[pos:], highlight=False, markup=False)
    if sources:
        out.print("\nSources:")
    for n, ref in enumerate(sources, 1):
        md = ref.get("metadata") or {}
        src = md.get("x-amz-bedrock-kb-source-uri", "")
        excerpt = " ".join(ref["content"]["text"].split())
        out.print(f"  [{n}] {src}", highlight=False, markup=False)
        out.print(f"      {excerpt[:200]}{'…' if len(excerpt) > 200 else ''}", highlight=False, markup=False)
    generator = res.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-pgkb-generator", "")
    note = " (sentences quoted from the sources, no language model)" if generator == "extractive" else ""
    err.print(f"generator: {generator}{note}", highlight=False, markup=False)
    err.print(f"session: {res['sessionId']} (continue with --session {res['sessionId']})", highlight=False, markup=False)



def eval_cmd(
    dataset: Annotated[Path, typer.Argument(help="A BEIR dataset folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")],
    search: Annotated[str, typer.Option(help="semantic | hybrid | lexical (BM25 alone, a pgkb extension)")] = "semantic",
    k: Annotated[int, typer.Option("-k", "--k", help="Results per query (1-100; recall@100 needs 100).")] = 100,
    model: Annotated[str, typer.Option(help="Embedding model id.")] = DEFAULT_MODEL_ID,
    chunking: ChunkingOpt = "default",
    max_tokens: MaxTokensOpt = None,
    overlap: OverlapOpt = None,
    parent_tokens: ParentTokensOpt = None,
    buffer_size: BufferSizeOpt = None,
    breakpoint: BreakpointOpt = None,
    compare: Annotated[list[str] | None, typer.Option(
        help='Another configuration, as overrides of the first: "search=hybrid" or "chunking=fixed,max_tokens=200"'
             ' (a bare "lexical" means search=lexical). Repeat it, or separate configurations with ";",'
             ' e.g. --compare "lexical;hybrid" shows SEMANTIC, LEXICAL and HYBRID side by side.')] = None,
    split: Annotated[str, typer.Option(help="qrels split")] = "test",
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Score retrieval on a BEIR dataset: nDCG@10, recall@10, recall@100, MRR@10 and latency percentiles."""
    from pgkb.retrieval.evaluation import (
        EVAL_SEARCH,
        format_reports,
        load_beir,
        override_config,
        write_corpus_folder,
    )
    from pgkb.service.evaluation import run_configuration

    if search.lower() not in EVAL_SEARCH:
        raise PgkbError(f"--search must be one of {', '.join(EVAL_SEARCH)}")
    base = {"search": search.lower(), "k": k, "model": model, "chunking": chunking, "max_tokens": max_tokens,
            "overlap": overlap, "parent_tokens": parent_tokens, "buffer_size": buffer_size, "breakpoint": breakpoint}
    overrides = [c for value in compare or [] for c in value.split(";") if c.strip()]
    configs = [base] + [override_config(base, c) for c in overrides]  # checked before any work
    ds = load_beir(dataset, split)
    docs_dir = write_corpus_folder(ds, dataset, settings_for(database_url, data_dir).data_dir)

    def log(msg: str) -> None:
        err.print(msg, highlight=False, markup=False)

    with service(database_url, data_dir) as svc:
        reports = [run_configuration(svc, ds, docs_dir, c, log) for c in configs]
    if as_json:
        return print_json([r.to_dict() for r in reports])
    out.print(f"{ds.name}: {len(ds.queries)} judged queries, {len(ds.corpus)} documents", highlight=False)
    out.print(format_reports(reports), highlight=False)
