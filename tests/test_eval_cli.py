"""`pgkb eval`: a BEIR dataset through a real knowledge base (local model, embedded PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from pgkb.cli import app

DOCS = {
    "d1": "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.",
    "d2": "Photosynthesis lets plants turn light into chemical energy.",
    "d3": "The Great Wall of China runs across northern China.",
    "d4/x": "Python is a programming language created by Guido van Rossum.",
    "d5": "Mount Everest is the highest mountain on Earth.",
    "d6": "Mitochondria are the powerhouse of the cell.",
}
QUERIES = {"q1": "where is the eiffel tower", "q2": "who created the python language", "q3": "highest mountain in the world",
           "q4": "how do plants make energy from light", "q5": "unjudged query"}
QRELS = "q1\td1\t2\nq2\td4/x\t1\nq3\td5\t1\nq4\td2\t1\nq4\td6\t1\n"


def test_pgkb_eval_with_compare(tmp_path: Path, new_database_url: str) -> None:
    root = tmp_path / "tiny"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": k, "title": "", "text": v}) for k, v in DOCS.items()))
    (root / "queries.jsonl").write_text("\n".join(json.dumps({"_id": k, "text": v}) for k, v in QUERIES.items()))
    (root / "qrels" / "test.tsv").write_text(QRELS)
    args = ["eval", str(root), "-k", "5", "--compare", "search=hybrid", "--database-url", new_database_url,
            "--data-dir", str(tmp_path / "data"), "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    reports = json.loads(res.stdout[res.stdout.index("["):])
    assert [r["name"] for r in reports] == ["semantic/default", "hybrid/default"]
    for r in reports:
        assert r["queries"] == 4
        assert r["mrr_at_10"] >= 0.75 and r["recall_at_10"] >= 0.75  # top results are the right documents
        assert 0 < r["ndcg_at_10"] <= 1 and r["p50_ms"] > 0
    # The corpus folder is named after the dataset (source URIs stay readable), the KB uses the default model.
    (folder,) = (tmp_path / "data" / "eval").iterdir()
    assert folder.name.startswith("tiny-") and len(folder.name) == len("tiny-") + 10
    assert (folder / "docs" / "d4%2Fx.txt").exists()
    from pgkb.config import Settings
    from pgkb.embeddings import DEFAULT_MODEL_ID
    from pgkb.service import KnowledgeBaseService

    with KnowledgeBaseService(Settings().with_overrides(database_url=new_database_url, data_dir=str(tmp_path / "data"))) as svc:
        kbs = svc.list_knowledge_bases()["knowledgeBaseSummaries"]
        models = {svc.resolve(k["knowledgeBaseId"]).model_id for k in kbs}
    assert models == {DEFAULT_MODEL_ID}
    # Bad input: one line, no traceback.
    bad = CliRunner().invoke(app, ["eval", str(root), "--compare", "colour=blue", "--database-url", new_database_url,
                                   "--data-dir", str(tmp_path / "data")])
    assert bad.exit_code != 0 and "--compare" in str(bad.exception)


def test_pgkb_eval_lexical_and_several_configurations(tmp_path: Path, new_database_url: str) -> None:
    """`--search lexical` and several `--compare` configurations side by side, on a generated corpus in
    Arabic script that the default (English) model cannot read: HYBRID, through Retrieve, scores as
    BM25 alone does, and better than SEMANTIC."""
    from test_fusion import arabic_corpus

    docs, queries = arabic_corpus()
    root = tmp_path / "blind"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": f"d{i}", "text": d}) for i, d in enumerate(docs)))
    (root / "queries.jsonl").write_text("\n".join(json.dumps({"_id": f"q{j}", "text": q}) for j, (q, _) in enumerate(queries)))
    (root / "qrels" / "test.tsv").write_text("".join(f"q{j}\td{i}\t1\n" for j, (_, i) in enumerate(queries)))
    common = ["--database-url", new_database_url, "--data-dir", str(tmp_path / "data")]
    res = CliRunner().invoke(app, ["eval", str(root), "--search", "hybrid", "--compare", "lexical;search=semantic",
                                   *common, "--json"])
    assert res.exit_code == 0, (res.output, res.exception)
    reports = {r["name"]: r for r in json.loads(res.stdout[res.stdout.index("["):])}
    assert list(reports) == ["hybrid/default", "lexical/default", "semantic/default"]
    hyb, lex, sem = reports["hybrid/default"], reports["lexical/default"], reports["semantic/default"]
    assert lex["mrr_at_10"] == 1.0  # each query's own words find its document first
    assert hyb["ndcg_at_10"] == lex["ndcg_at_10"] and hyb["recall_at_100"] == lex["recall_at_100"]
    assert sem["ndcg_at_10"] < lex["ndcg_at_10"]
    # The same with repeated --compare and plain-text output: one column per configuration.
    res = CliRunner().invoke(app, ["eval", str(root), "-k", "10", "--search", "lexical", "--compare", "semantic",
                                   "--compare", "hybrid", *common])
    assert res.exit_code == 0, (res.output, res.exception)
    header = next(line for line in res.stdout.splitlines() if line.startswith("metric"))
    assert header.split()[1:] == ["lexical/default", "semantic/default", "hybrid/default"]
    bad = CliRunner().invoke(app, ["eval", str(root), "--compare", "search=fuzzy", *common])
    assert bad.exit_code != 0 and "fuzzy" in str(bad.exception)
