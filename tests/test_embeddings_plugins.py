"""A third party adds an embedding model without touching pgkb: an installed distribution declares an
entry point in the `pgkb.embeddings` group, and its models appear beside pgkb's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

PLUGIN = textwrap.dedent('''
    import hashlib

    import numpy as np

    from pgkb.embeddings.base import ModelSpec, approximate_tokenizer, l2_normalize


    class HashModel:
        def __init__(self, spec, dimensions):
            self.spec, self.dimensions = spec, dimensions
            self.tokenizer = approximate_tokenizer()

        def embed_documents(self, texts):
            rows = [np.frombuffer(hashlib.sha256(t.encode()).digest()[: self.dimensions], np.uint8) for t in texts]
            return l2_normalize(np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dimensions))

        embed_queries = embed_documents


    def register(register_provider):
        register_provider("hashing", HashModel, lambda: [ModelSpec("acme.hash-8", "hashing", 8, description="demo")])
''')


def _install_plugin(root: Path) -> dict[str, str]:
    (root / "acme_pgkb_plugin.py").write_text(PLUGIN)
    dist = root / "acme_pgkb_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-pgkb-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[pgkb.embeddings]\nacme = acme_pgkb_plugin:register\n")
    return {**os.environ, "PYTHONPATH": str(root)}


def test_an_entry_point_adds_a_model(tmp_path: Path) -> None:
    env = _install_plugin(tmp_path)
    listed = subprocess.run([sys.executable, "-m", "pgkb.cli", "models", "--json"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    ids = {m["id"]: m for m in json.loads(listed.stdout)}
    assert ids["acme.hash-8"]["dimensions"] == [8] and "amazon.titan-embed-text-v2:0" in ids
    code = ("from pgkb.embeddings import get_model; m = get_model('acme.hash-8');"
            "v = m.embed_documents(['a', 'b']); print(v.shape, round(float((v[0] ** 2).sum()), 4))")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "(2, 8) 1.0"
