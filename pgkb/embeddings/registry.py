"""Model registry: which embedding models exist, their limits, and one loaded instance per process.

Providers register by name: `register_provider(name, loader, specs)` adds a loader for the specs whose
`provider` is `name`, and optionally a source of specs. pgkb's own providers (local torch and ONNX
models, Bedrock, OpenAI-compatible endpoints) register below; a third party adds models without
touching pgkb through the entry-point group `pgkb.embeddings`: each entry point is a callable that
receives `register_provider` and calls it (as `llm`'s plugins register models).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points

from pgkb.embeddings.base import EmbeddingModel, ModelSpec
from pgkb.errors import ModelNotAvailableError, ValidationError

log = logging.getLogger(__name__)

Loader = Callable[[ModelSpec, int], EmbeddingModel]
SpecSource = Callable[[], Iterable[ModelSpec]]
ENTRY_POINT_GROUP = "pgkb.embeddings"

#: all-MiniLM-L6-v2 on sentence-transformers/torch: the reference every local variant is measured against.
REFERENCE_MODEL_ID = "sentence-transformers.all-minilm-l6-v2"
#: What a new knowledge base uses when no model is named: the reference model on ONNX Runtime, int8,
#: one text per run (so a text's vector does not depend on its batch). On msmarco-5k through pgkb's
#: Retrieve (bench/bench_ingest_backends.py) its nDCG@10 is within 0.005 of the reference's, at about
#: 3x the reference's ingestion and ~6 ms Retrieve; the figures are in docs/embeddings.md.
DEFAULT_MODEL_ID = "sentence-transformers.all-minilm-l6-v2-onnx-int8-unbatched"
#: The fastest local model with nDCG@10 within 0.005 of the reference: the default.
FAST_MODEL_ID = DEFAULT_MODEL_ID


_BUILTIN: dict[str, ModelSpec] = {
    s.id: s
    for s in (
        ModelSpec(
            REFERENCE_MODEL_ID, "local", 384, (384,), 256, True,
            "all-MiniLM-L6-v2 on sentence-transformers/torch (the reference local backend)",
            {"backend": "torch"},
        ),
        ModelSpec(
            "sentence-transformers.all-minilm-l6-v2-onnx", "local", 384, (384,), 256, True,
            "all-MiniLM-L6-v2 exported to ONNX, fp32, on ONNX Runtime",
            {"backend": "onnx", "variant": "fp32"},
        ),
        ModelSpec(
            "sentence-transformers.all-minilm-l6-v2-onnx-int8", "local", 384, (384,), 256, True,
            "all-MiniLM-L6-v2 exported to ONNX, int8 dynamic quantization, on ONNX Runtime",
            {"backend": "onnx", "variant": "int8"},
        ),
        ModelSpec(
            "sentence-transformers.all-minilm-l6-v2-onnx-int8-unbatched", "local", 384, (384,), 256, True,
            "all-MiniLM-L6-v2 exported to ONNX, int8 dynamic quantization, one text per run (a text's "
            "vector does not depend on its batch), on ONNX Runtime",
            {"backend": "onnx", "variant": "int8", "texts_per_run": 1},
        ),
        ModelSpec("amazon.titan-embed-text-v1", "bedrock", 1536, (1536,), 8192, True,
                  "Amazon Titan Text Embeddings G1 (Bedrock)"),
        ModelSpec("amazon.titan-embed-text-v2:0", "bedrock", 1024, (256, 512, 1024), 8192, True,
                  "Amazon Titan Text Embeddings V2 (Bedrock)"),
        ModelSpec("cohere.embed-english-v3", "bedrock", 1024, (1024,), 512, True,
                  "Cohere Embed English v3 (Bedrock)"),
        ModelSpec("cohere.embed-multilingual-v3", "bedrock", 1024, (1024,), 512, True,
                  "Cohere Embed Multilingual v3 (Bedrock)"),
    )
}

_ARN = re.compile(r"^arn:aws[\w-]*:bedrock:([\w-]*):(\d{12})?:foundation-model/(.+)$")


def model_id_from_arn(model_id_or_arn: str) -> str:
    """`arn:aws:bedrock:<region>::foundation-model/<id>` → `<id>`; a bare id is returned as is."""
    s = (model_id_or_arn or "").strip()
    if s.startswith("arn:"):
        m = _ARN.match(s)
        if not m or not m.group(3):
            raise ValidationError(
                f"Invalid model ARN '{s}': expected arn:aws:bedrock:<region>::foundation-model/<model id>"
            )
        return m.group(3)
    return s


def model_arn(model_id: str, region: str) -> str:
    return f"arn:aws:bedrock:{region}::foundation-model/{model_id_from_arn(model_id)}"


_loaders: dict[str, Loader] = {}
_sources: list[SpecSource] = []
_plugins_loaded = False


def register_provider(name: str, loader: Loader, specs: SpecSource | None = None) -> None:
    """Serve the specs whose `provider` is `name` with `loader`; `specs`, when given, is called each
    time the models are listed (so configuration read from the environment can change)."""
    _loaders[name] = loader
    if specs is not None:
        _sources.append(specs)


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()(register_provider)
        except Exception as exc:  # a broken plugin must not take pgkb's own models down
            log.warning("embedding plugin %s failed to load: %s", ep.name, exc)


def _local(spec: ModelSpec, dimensions: int) -> EmbeddingModel:
    if spec.options.get("backend") == "onnx":
        from pgkb.embeddings.onnx import load_onnx_model

        return load_onnx_model(spec, dimensions)
    from pgkb.embeddings.local import load_local_model

    return load_local_model(spec, dimensions)


def _bedrock(spec: ModelSpec, dimensions: int) -> EmbeddingModel:
    from pgkb.embeddings.bedrock import load_bedrock_model

    return load_bedrock_model(spec, dimensions)


def _openai(spec: ModelSpec, dimensions: int) -> EmbeddingModel:
    from pgkb.embeddings.openai import load_openai_model

    return load_openai_model(spec, dimensions)


def _openai_specs() -> Iterable[ModelSpec]:
    from pgkb.embeddings.openai import configured_specs

    return configured_specs()


register_provider("local", _local, lambda: (s for s in _BUILTIN.values() if s.provider == "local"))
register_provider("bedrock", _bedrock, lambda: (s for s in _BUILTIN.values() if s.provider == "bedrock"))
register_provider("openai", _openai, _openai_specs)


def _all_specs() -> dict[str, ModelSpec]:
    _load_plugins()
    specs: dict[str, ModelSpec] = {}
    for source in _sources:
        for s in source():
            specs[s.id] = s
    return specs


def list_specs() -> list[ModelSpec]:
    return sorted(_all_specs().values(), key=lambda s: s.id)


def get_spec(model_id_or_arn: str) -> ModelSpec:
    model_id = model_id_from_arn(model_id_or_arn)
    specs = _all_specs()
    spec = specs.get(model_id)
    if spec is None:
        raise ModelNotAvailableError(
            f"The embedding model '{model_id}' is not available. Known models: {', '.join(sorted(specs))}"
        )
    return spec


_cache: dict[tuple[str, int], EmbeddingModel] = {}
_lock = threading.Lock()


def _loader(spec: ModelSpec) -> Loader:
    loader = _loaders.get(spec.provider)
    if loader is None:
        raise ModelNotAvailableError(f"No provider {spec.provider!r} is registered for model {spec.id}")
    return loader


def resolve_dimensions(spec: ModelSpec, dimensions: int | None) -> int:
    if dimensions is None:
        return spec.dimensions
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions not in spec.dimension_choices:
        raise ValidationError(
            f"Model {spec.id} supports dimensions {', '.join(map(str, spec.dimension_choices))}, "
            f"not {dimensions!r}"
        )
    return dimensions


# Built-in models by the (id or ARN, dimensions) they were asked for: the hot path (every Retrieve
# asks) skips get_spec, which gathers every provider's specs, reading the configuration's
# environment, each time (0.05-0.13 ms a call). Configured and plugin models, whose specs may change
# with the configuration, are looked up in full each time.
_builtin_hits: dict[tuple[str, int | None], EmbeddingModel] = {}


def get_model(model_id: str, dimensions: int | None = None) -> EmbeddingModel:
    """The loaded model (once per process per id and dimensions). Thread-safe."""
    hit = _builtin_hits.get((model_id, dimensions))
    if hit is not None:
        return hit
    spec = get_spec(model_id)
    dims = resolve_dimensions(spec, dimensions)
    key = (spec.id, dims)
    model = _cache.get(key)
    if model is None:
        with _lock:
            model = _cache.get(key)
            if model is None:
                model = _loader(spec)(spec, dims)
                _cache[key] = model
    if _BUILTIN.get(spec.id) is spec:
        with _lock:
            if _cache.get(key) is model:  # not cleared meanwhile
                _builtin_hits[(model_id, dimensions)] = model
    return model


def clear_cache() -> None:
    """Forget loaded models (tests; after changing provider configuration)."""
    with _lock:
        _cache.clear()
        _builtin_hits.clear()
