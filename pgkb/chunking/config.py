"""Bedrock's `chunkingConfiguration`: validation with the field named, and the defaults."""

from __future__ import annotations

from typing import Any

from pgkb.errors import PgkbError, ValidationError

STRATEGIES = ("FIXED_SIZE", "NONE", "HIERARCHICAL", "SEMANTIC")
MAX_TOKENS_LIMIT = 8192
#: Bedrock's default when no chunkingConfiguration is given: ~300 tokens, 20% overlap.
DEFAULT_CHUNKING: dict[str, Any] = {
    "chunkingStrategy": "FIXED_SIZE",
    "fixedSizeChunkingConfiguration": {"maxTokens": 300, "overlapPercentage": 20},
}
_SUB = {
    "FIXED_SIZE": "fixedSizeChunkingConfiguration",
    "HIERARCHICAL": "hierarchicalChunkingConfiguration",
    "SEMANTIC": "semanticChunkingConfiguration",
}
_ROOT = "chunkingConfiguration"


def validate_chunking_configuration(cfg: dict[str, Any] | None) -> None:
    """Raise ValidationError naming the offending field; None (the default) is valid."""
    if cfg is None:
        return
    if not isinstance(cfg, dict):
        raise ValidationError(f"{_ROOT} must be an object")
    strategy = cfg.get("chunkingStrategy")
    if strategy not in STRATEGIES:
        raise ValidationError(
            f"{_ROOT}.chunkingStrategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}"
        )
    if strategy == "NONE":
        return
    name = _SUB[strategy]
    sub = cfg.get(name)
    if not isinstance(sub, dict):
        raise ValidationError(f"{_ROOT}.{name} is required when chunkingStrategy is {strategy}")
    path = f"{_ROOT}.{name}"
    if strategy == "FIXED_SIZE":
        _int(sub, "maxTokens", path, 1, MAX_TOKENS_LIMIT)
        _int(sub, "overlapPercentage", path, 1, 99)
    elif strategy == "HIERARCHICAL":
        levels = sub.get("levelConfigurations")
        if not isinstance(levels, list) or len(levels) != 2:
            raise ValidationError(
                f"{path}.levelConfigurations must list exactly 2 levels (parent, child)"
            )
        for i, level in enumerate(levels):
            if not isinstance(level, dict):
                raise ValidationError(f"{path}.levelConfigurations[{i}] must be an object")
            _int(level, "maxTokens", f"{path}.levelConfigurations[{i}]", 1, MAX_TOKENS_LIMIT)
        _int(sub, "overlapTokens", path, 1, None)
    else:
        _int(sub, "maxTokens", path, 1, MAX_TOKENS_LIMIT)
        _int(sub, "bufferSize", path, 0, 1)
        _int(sub, "breakpointPercentileThreshold", path, 50, 99)


def _int(obj: dict[str, Any], key: str, path: str, lo: int, hi: int | None) -> int:
    if key not in obj:
        raise ValidationError(f"{path}.{key} is required")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{path}.{key} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise ValidationError(f"{path}.{key} must be {bound}, got {value}")
    return value


#: Defaults for the parts of a strategy a caller leaves out (the FIXED_SIZE ones are Bedrock's default).
DEFAULT_MAX_TOKENS = DEFAULT_CHUNKING["fixedSizeChunkingConfiguration"]["maxTokens"]
DEFAULT_OVERLAP_PERCENT = DEFAULT_CHUNKING["fixedSizeChunkingConfiguration"]["overlapPercentage"]
DEFAULT_PARENT_TOKENS = 1500
DEFAULT_OVERLAP_TOKENS = 60
DEFAULT_BUFFER_SIZE = 0
DEFAULT_BREAKPOINT = 95


def chunking_configuration(
    strategy: str, *, max_tokens: int | None = None, overlap: int | None = None, parent_tokens: int | None = None,
    buffer_size: int | None = None, breakpoint: int | None = None,
) -> dict[str, Any] | None:
    """Bedrock's `chunkingConfiguration` from a strategy name (fixed, none, hierarchical, semantic; default →
    None) and the few numbers people set, the others defaulted. `overlap` is a percentage for FIXED_SIZE and
    tokens for HIERARCHICAL."""
    s = strategy.upper().replace("-", "_")
    if s in ("DEFAULT", ""):
        return None
    if s in ("FIXED", "FIXED_SIZE"):
        return {"chunkingStrategy": "FIXED_SIZE", "fixedSizeChunkingConfiguration": {
            "maxTokens": max_tokens or DEFAULT_MAX_TOKENS, "overlapPercentage": overlap or DEFAULT_OVERLAP_PERCENT}}
    if s == "NONE":
        return {"chunkingStrategy": "NONE"}
    if s == "HIERARCHICAL":
        return {"chunkingStrategy": "HIERARCHICAL", "hierarchicalChunkingConfiguration": {
            "levelConfigurations": [{"maxTokens": parent_tokens or DEFAULT_PARENT_TOKENS},
                                    {"maxTokens": max_tokens or DEFAULT_MAX_TOKENS}],
            "overlapTokens": overlap or DEFAULT_OVERLAP_TOKENS}}
    if s == "SEMANTIC":
        return {"chunkingStrategy": "SEMANTIC", "semanticChunkingConfiguration": {
            "maxTokens": max_tokens or DEFAULT_MAX_TOKENS,
            "bufferSize": DEFAULT_BUFFER_SIZE if buffer_size is None else buffer_size,
            "breakpointPercentileThreshold": breakpoint or DEFAULT_BREAKPOINT}}
    raise PgkbError(f"unknown chunking strategy {strategy!r}: use fixed, none, hierarchical or semantic")
