"""BEIR loading and retrieval metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pgkb.errors import ValidationError
from pgkb.retrieval.evaluation import (
    evaluate,
    format_reports,
    load_beir,
    mrr_at,
    ndcg_at,
    percentile,
    recall_at,
)


def make_dataset(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    corpus = [{"_id": f"d{i}", "title": "T" if i == 0 else "", "text": f"text {i}", "metadata": {}} for i in range(5)]
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in corpus) + "\n")
    queries = [{"_id": "q1", "text": "first"}, {"_id": "q2", "text": "second"}, {"_id": "q3", "text": "unjudged"},
               {"_id": "q4", "text": "only zero grades"}]
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries))
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td3\t1\nq2\td4\t1\nq4\td0\t0\nq9\td0\t1\n"
    )
    return root


def test_load_beir_keeps_only_judged_queries(tmp_path: Path) -> None:
    ds = load_beir(make_dataset(tmp_path / "tiny"))
    assert ds.name == "tiny" and len(ds.corpus) == 5
    assert ds.queries == {"q1": "first", "q2": "second"}
    assert ds.qrels == {"q1": {"d1": 2, "d3": 1}, "q2": {"d4": 1}}
    docs = dict(ds.documents())
    assert docs["d0"] == "T\ntext 0" and docs["d1"] == "text 1"


def test_load_beir_errors(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="missing corpus"):
        load_beir(tmp_path)
    root = make_dataset(tmp_path / "bad")
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\nnot json\n')
    with pytest.raises(ValidationError, match="queries.jsonl:2: not JSON"):
        load_beir(root)


def test_metrics_by_hand() -> None:
    rels = {"a": 3, "b": 1, "c": 2}
    ranked = ["x", "a", "c", "y"]
    dcg = 3 / math.log2(3) + 2 / math.log2(4)
    idcg = 3 / 1 + 2 / math.log2(3) + 1 / 2
    assert ndcg_at(ranked, rels) == pytest.approx(dcg / idcg)
    dcg_e = 7 / math.log2(3) + 3 / math.log2(4)
    idcg_e = 7 + 3 / math.log2(3) + 1 / 2
    assert ndcg_at(ranked, rels, exponential=True) == pytest.approx(dcg_e / idcg_e)
    assert ndcg_at(["a", "c", "b"], rels) == pytest.approx(1.0)
    assert ndcg_at(["c"], rels, k=1) == pytest.approx(2 / 3)
    assert recall_at(ranked, rels, 10) == pytest.approx(2 / 3)
    assert recall_at(ranked, rels, 2) == pytest.approx(1 / 3)
    assert mrr_at(ranked, rels) == 0.5 and mrr_at(["x"] * 12 + ["a"], rels) == 0.0
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([5], 95) == 5


def test_evaluate_scores_each_judged_query_and_dedupes_chunks(tmp_path: Path) -> None:
    ds = load_beir(make_dataset(tmp_path / "tiny"))
    answers = {"first": ["d1", "d1", "d2", "d3"], "second": ["d0", "d4"]}  # d1 twice: two chunks of one document
    calls: list[str] = []

    def search_fn(text: str) -> list[str]:
        calls.append(text)
        return answers[text]

    r = evaluate(search_fn, ds, name="toy", warmup=1)
    q1 = ndcg_at(["d1", "d2", "d3"], ds.qrels["q1"])
    q2 = ndcg_at(["d0", "d4"], ds.qrels["q2"])
    assert r.queries == 2 and r.ndcg_at_10 == pytest.approx((q1 + q2) / 2)
    assert r.per_query["q1"] == pytest.approx(q1) and 0.9 < q1 < 1.0  # d2 (unjudged) sits between
    assert r.mrr_at_10 == pytest.approx((1 + 0.5) / 2)
    assert r.recall_at_10 == 1.0 and r.recall_at_100 == 1.0
    assert r.p50_ms >= 0 and r.p99_ms >= r.p50_ms
    assert calls == ["first", "first", "second"]  # one warm-up query, then every judged query once
    table = format_reports([r, evaluate(lambda t: [], ds, name="empty")])
    assert "toy" in table and "empty" in table and "nDCG@10" in table and "0.0000" in table
    assert set(r.to_dict()) >= {"ndcg_at_10", "recall_at_10", "recall_at_100", "mrr_at_10", "p50_ms", "p95_ms"}
