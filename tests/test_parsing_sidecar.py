"""Bedrock `<file>.metadata.json` sidecars: both forms, and every malformed case."""

from __future__ import annotations

import json

import pytest

from pgkb.errors import ValidationError
from pgkb.parsing import (
    MAX_SIDECAR_BYTES,
    MetadataError,
    Sidecar,
    is_sidecar,
    parse_sidecar,
    read_sidecar,
    sidecar_name,
    sidecar_target,
)


def dump(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_plain_form() -> None:
    data = dump({"metadataAttributes": {"genre": "entertainment", "year": 2024, "rating": 4.5,
                                        "published": True, "tags": ["a", "b"]}})
    attrs = parse_sidecar(data)
    assert attrs == {"genre": "entertainment", "year": 2024.0, "rating": 4.5, "published": True,
                     "tags": ["a", "b"]}
    assert isinstance(attrs["year"], float)  # Bedrock returns numbers as 2024.0
    assert read_sidecar(data).embed_keys == ()


def test_typed_form_and_include_for_embedding() -> None:
    data = dump({"metadataAttributes": {
        "owner": {"value": {"type": "STRING_LIST", "stringListValue": ["user01", "user02"]},
                  "includeForEmbedding": False},
        "team": {"value": {"type": "STRING", "stringValue": "mycompany"}, "includeForEmbedding": True},
        "created_time": {"value": {"type": "NUMBER", "numberValue": 1786366000}, "includeForEmbedding": True},
        "is_confidential": {"value": {"type": "BOOLEAN", "booleanValue": False}},
    }})
    sidecar = read_sidecar(data)
    assert sidecar == Sidecar(
        {"owner": ["user01", "user02"], "team": "mycompany", "created_time": 1786366000.0,
         "is_confidential": False},
        ("team", "created_time"),
    )
    assert sidecar.embedding_prefix() == "team: mycompany\ncreated_time: 1786366000\n\n"
    assert parse_sidecar(data) == sidecar.attributes


def test_mixed_forms_bom_and_empty() -> None:
    data = b"\xef\xbb\xbf" + dump({"metadataAttributes": {
        "plain": "x", "typed": {"value": {"type": "NUMBER", "numberValue": 2.5}}}})
    assert parse_sidecar(data) == {"plain": "x", "typed": 2.5}
    assert parse_sidecar(dump({"metadataAttributes": {}})) == {}


def test_sql_looking_keys_and_values_are_data() -> None:
    attrs = parse_sidecar(dump({"metadataAttributes": {"a'; DROP TABLE x; --": "' OR 1=1 --"}}))
    assert attrs == {"a'; DROP TABLE x; --": "' OR 1=1 --"}


def _attrs(value: object) -> bytes:
    return dump({"metadataAttributes": value})


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{" + b" " * MAX_SIDECAR_BYTES + b"}", "over the 10240-byte limit"),
        (b'{"metadataAttributes": {"a": 1,}}', "not valid UTF-8 JSON"),
        (b"\xff\xfe garbage", "not valid UTF-8 JSON"),
        (b'{"metadataAttributes": {"a": NaN}}', "not valid UTF-8 JSON"),
        (dump(["metadataAttributes"]), "must be a JSON object"),
        (dump({"attributes": {"a": "b"}}), 'with a "metadataAttributes" object'),
        (_attrs(["a", "b"]), '"metadataAttributes" must be a JSON object'),
        (_attrs({"k": None}), "not null"),
        (_attrs({"k": [1, 2]}), "list of strings, not list"),
        (_attrs({"k": {"nested": "object"}}), "expected"),
        (_attrs({"k": {"value": "plain"}}), "expected"),
        (_attrs({"k": {"value": {"type": "DATE", "stringValue": "2024"}}}), "unknown type 'DATE'"),
        (_attrs({"k": {"value": {"stringValue": "x"}}}), "unknown type None"),
        (_attrs({"k": {"value": {"type": "NUMBER", "numberValue": "12"}}}), "does not match type NUMBER"),
        (_attrs({"k": {"value": {"type": "NUMBER", "numberValue": True}}}), "does not match type NUMBER"),
        (_attrs({"k": {"value": {"type": "BOOLEAN", "booleanValue": "true"}}}), "does not match type BOOLEAN"),
        (_attrs({"k": {"value": {"type": "STRING_LIST", "stringListValue": "x"}}}), "does not match"),
        (_attrs({"k": {"value": {"type": "STRING_LIST", "stringListValue": ["x", 1]}}}), "does not match"),
        (_attrs({"k": {"value": {"type": "STRING", "numberValue": 3}}}), "needs exactly one 'stringValue'"),
        (_attrs({"k": {"value": {"type": "STRING", "stringValue": "a", "numberValue": 3}}}), "exactly one"),
        (_attrs({"k": {"value": {"type": "STRING", "stringValue": "a"}, "includeForEmbedding": "yes"}}),
         "includeForEmbedding must be true or false"),
        (_attrs({"k": {"value": {"type": "STRING", "stringValue": "a"}, "extra": 1}}), "expected"),
        (_attrs({"k" * 101: "v"}), "over 100"),
        (_attrs({"": "v"}), "must not be empty"),
        (_attrs({"x-amz-bedrock-kb-source-uri": "s3://x"}), "reserved prefix"),
        (_attrs({"n": float("inf")}), "not valid UTF-8 JSON"),  # dumped as Infinity: not JSON
        (b'{"metadataAttributes": {"n": 1e400}}', "must be finite"),  # valid JSON, overflows a double
        (_attrs({"n": 10**400}), "must be finite"),
    ],
)
def test_malformed_sidecars(data: bytes, reason: str) -> None:
    with pytest.raises(MetadataError) as info:
        parse_sidecar(data)
    assert reason in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValidationError)


def test_key_of_exactly_100_characters_is_fine() -> None:
    assert parse_sidecar(_attrs({"k" * 100: "v"})) == {"k" * 100: "v"}


def test_sidecar_names() -> None:
    assert sidecar_name("docs/a.txt") == "docs/a.txt.metadata.json"
    assert is_sidecar("docs/a.txt.metadata.json") and is_sidecar("A.PDF.METADATA.JSON")
    assert not is_sidecar("docs/a.txt") and not is_sidecar("metadata.json.txt")
    assert sidecar_target("docs/a.txt.metadata.json") == "docs/a.txt"
    assert sidecar_target("docs/a.txt") == "docs/a.txt"
