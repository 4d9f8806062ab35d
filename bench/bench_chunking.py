"""Chunking throughput on a ~5 MB document, against the tokenizer alone in the same run.

    python bench/bench_chunking.py [--mb 5] [--semantic-kb 200]

Prints chars/s for each strategy and its ratio to tokenising the same text (the floor: chunking
tokenises once, so a ratio near 1 means the rest is negligible). SEMANTIC is embedding-bound, so it is
measured on a smaller text against the model's own `encode` of the same sentence groups.
"""

from __future__ import annotations

import argparse
import json
import time

import bench_data  # noqa: E402
import numpy as np

from pgkb.chunking import chunk_text, split_sentences
from pgkb.chunking.packing import _tokenize
from pgkb.embeddings.base import HFTokenizer, minilm_dir
from pgkb.parsing import ParsedDocument

MSMARCO = bench_data.root() / "msmarco-5k" / "corpus.jsonl"  # optional: synthetic text without it


def corpus_text(chars: int) -> str:
    if MSMARCO.exists():
        with MSMARCO.open() as f:
            passages = [json.loads(line)["text"] for line in f]
    else:  # fall back to synthetic prose
        passages = [f"Passage {i} explains topic {i % 97} in plain words. It has two sentences." for i in range(5000)]
    text = "\n\n".join(passages)
    while len(text) < chars:
        text += "\n\n" + text
    return text[:chars]


def best_of(n: int, fn) -> float:  # noqa: ANN001
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=5.0)
    ap.add_argument("--semantic-kb", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    tok = HFTokenizer(minilm_dir() / "tokenizer.json")
    text = corpus_text(int(args.mb * 1_000_000))
    doc = ParsedDocument(text)
    n = len(text)
    print(f"document: {n:,} chars, {len(tok.offsets(text)):,} MiniLM tokens")

    one = best_of(args.repeat, lambda: tok.offsets(text))
    print(f"{'tokenizer.offsets, one call':44s} {n / one / 1e6:6.2f} M chars/s  {one:6.2f} s")
    ref = best_of(args.repeat, lambda: _tokenize(text, tok))
    print(f"{'reference: tokenizer.offsets, 64 KB pieces':44s} {n / ref / 1e6:6.2f} M chars/s  {ref:6.2f} s")
    t = best_of(args.repeat, lambda: split_sentences(text))
    print(f"{'sentence splitter':44s} {n / t / 1e6:6.2f} M chars/s  {t:6.2f} s")
    configs = {
        "FIXED_SIZE default (300 tokens, 20%)": None,
        "FIXED_SIZE 1000 tokens, 10%": {"chunkingStrategy": "FIXED_SIZE",
                                        "fixedSizeChunkingConfiguration": {"maxTokens": 1000, "overlapPercentage": 10}},
        "HIERARCHICAL 1500/300, overlap 60": {
            "chunkingStrategy": "HIERARCHICAL",
            "hierarchicalChunkingConfiguration": {"levelConfigurations": [{"maxTokens": 1500}, {"maxTokens": 300}],
                                                  "overlapTokens": 60}},
        "NONE": {"chunkingStrategy": "NONE"},
    }
    for name, cfg in configs.items():
        result = None

        def run(cfg=cfg) -> None:  # noqa: ANN001
            nonlocal result
            result = chunk_text(doc, cfg, tok)

        t = best_of(args.repeat, run)
        assert result is not None
        print(f"{name:44s} {n / t / 1e6:6.2f} M chars/s  {t:6.2f} s  {len(result.chunks):6d} chunks"
              f"  ratio to reference {ref / t:4.2f}")

    # Many small documents (msmarco passages): per-document overhead of parse + chunk.
    from pgkb.parsing import parse_bytes

    passages = [p.encode() for p in corpus_text(2_000_000).split("\n\n")[:5000]]
    small_ref = best_of(args.repeat, lambda: [tok.offsets(p.decode()) for p in passages])
    small = best_of(args.repeat, lambda: [chunk_text(parse_bytes(p, "p.txt"), None, tok) for p in passages])
    print(f"{'parse + FIXED_SIZE default, per passage':44s} {small / len(passages) * 1e6:6.0f} us/doc"
          f"  tokenizer alone {small_ref / len(passages) * 1e6:4.0f} us/doc ({len(passages)} passages)")

    # SEMANTIC: the model is the cost; compare with encoding the same groups directly.
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_dir()), device="cpu")
    sem_doc = ParsedDocument(text[: args.semantic_kb * 1000])
    groups = [sem_doc.text[s:e] for s, e in split_sentences(sem_doc.text)]

    def embed(texts: list[str]) -> np.ndarray:
        return model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)

    cfg = {"chunkingStrategy": "SEMANTIC",
           "semanticChunkingConfiguration": {"maxTokens": 300, "bufferSize": 0, "breakpointPercentileThreshold": 95}}
    raw = sem = float("inf")
    for _ in range(args.repeat):  # interleaved, best of each: the machine is shared
        raw = min(raw, best_of(1, lambda: embed(groups)))
        sem = min(sem, best_of(1, lambda: chunk_text(sem_doc, cfg, tok, embed)))
    print(f"{'SEMANTIC 300, buffer 0, 95th pct':44s} {len(sem_doc.text) / sem / 1e3:6.1f} K chars/s  {sem:6.2f} s"
          f"  {len(groups)} sentences; raw encode {raw:.2f} s, ratio {raw / sem:4.2f}")


if __name__ == "__main__":
    main()
