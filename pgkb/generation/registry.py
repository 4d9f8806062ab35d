"""modelArn -> generator.

1. `pgkb.extractive` (or an ARN ending in `/pgkb.extractive`): the offline extractive generator.
2. A key of PGKB_OPENAI_GENERATORS (the full modelArn or the id after its last `/`).
3. Anything else: Amazon Bedrock's Converse API, when AWS (or PGKB_BEDROCK_ENDPOINT_URL) is configured.
Otherwise a ValidationException that says what to configure; nothing falls back silently.
"""

from __future__ import annotations

import threading
from typing import Any

from pgkb.generation import extractive, openai

_lock = threading.Lock()
_cache: dict[tuple[str, str], Any] = {}


def generator_for(model_arn: str) -> Any:
    if model_arn.rsplit("/", 1)[-1] == extractive.MODEL_ID:
        return extractive.ExtractiveGenerator()
    cfg = openai.lookup(model_arn)
    if cfg is not None:
        return openai.OpenAIChatGenerator(cfg)
    from pgkb.config import current
    from pgkb.generation import bedrock

    key = (model_arn, current().bedrock_endpoint_url or "")
    with _lock:
        gen = _cache.get(key)
    if gen is None:  # boto3 clients are thread-safe and slow to build: one per model and endpoint
        gen = bedrock.BedrockConverseGenerator(model_arn)
        with _lock:
            _cache[key] = gen
    return gen
