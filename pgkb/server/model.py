"""botocore's service models for the three Bedrock services, and the route table built from them.

Every operation of bedrock-agent, bedrock-agent-runtime and bedrock-runtime is routed (so an
operation pgkb does not serve gets a modelled error, not a 404 page); only `SERVED` operations
reach the service.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any
from urllib.parse import unquote

import botocore.loaders

SERVICES = ("bedrock-agent", "bedrock-agent-runtime", "bedrock-runtime")

SERVED: dict[str, frozenset[str]] = {
    "bedrock-agent": frozenset(
        {
            "CreateKnowledgeBase",
            "GetKnowledgeBase",
            "ListKnowledgeBases",
            "UpdateKnowledgeBase",
            "DeleteKnowledgeBase",
            "CreateDataSource",
            "GetDataSource",
            "ListDataSources",
            "UpdateDataSource",
            "DeleteDataSource",
            "StartIngestionJob",
            "GetIngestionJob",
            "ListIngestionJobs",
            "StopIngestionJob",
            "IngestKnowledgeBaseDocuments",
            "GetKnowledgeBaseDocuments",
            "ListKnowledgeBaseDocuments",
            "DeleteKnowledgeBaseDocuments",
            "TagResource",
            "UntagResource",
            "ListTagsForResource",
        }
    ),
    "bedrock-agent-runtime": frozenset(
        {"Retrieve", "RetrieveAndGenerate", "RetrieveAndGenerateStream", "Rerank",
         "CheckIngestedDocumentAcl", "GetIngestedDocumentAcl", "GetDocumentContent", "AgenticRetrieveStream"}
    ),
    "bedrock-runtime": frozenset({"InvokeModel"}),
}


def snake_case(name: str) -> str:
    """`RetrieveAndGenerate` -> `retrieve_and_generate` (boto3's method names)."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


@dataclass(frozen=True)
class ServiceModel:
    name: str
    shapes: dict[str, dict[str, Any]]
    operations: dict[str, dict[str, Any]]

    def shape(self, name: str) -> dict[str, Any]:
        return self.shapes[name]

    def error_status(self, code: str) -> int | None:
        """The HTTP status this service models for exception `code`, None when not modelled."""
        sh = self.shapes.get(code)
        if sh and sh.get("exception"):
            return int(sh.get("error", {}).get("httpStatusCode", 500 if sh.get("fault") else 400))
        return None


@dataclass(frozen=True)
class Operation:
    service: ServiceModel
    name: str
    method: str
    uri: str
    success_status: int
    input_shape: str | None
    output_shape: str | None
    served: bool
    labels: tuple[str, ...]
    regex: re.Pattern[str]
    fixed_query: tuple[tuple[str, str], ...] = field(default=())

    @property
    def python_name(self) -> str:
        return snake_case(self.name)


@cache
def load_service(name: str) -> ServiceModel:
    raw = botocore.loaders.Loader().load_service_model(name, "service-2")
    return ServiceModel(name=name, shapes=dict(raw["shapes"]), operations=dict(raw["operations"]))


def _compile_template(path: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """Regex over the *raw* (still percent-encoded) path: a label is one segment, `{x+}` is greedy."""
    labels: list[str] = []
    out = ["^"]
    pos = 0
    for m in re.finditer(r"\{([^}]+)\}", path):
        out.append(re.escape(path[pos : m.start()]))
        name = m.group(1)
        if name.endswith("+"):
            name = name[:-1]
            out.append(f"(?P<{_group(name)}>.+)")
        else:
            out.append(f"(?P<{_group(name)}>[^/]+)")
        labels.append(name)
        pos = m.end()
    out.append(re.escape(path[pos:]))
    out.append("$")
    return re.compile("".join(out)), tuple(labels)


def _group(label: str) -> str:
    return "L_" + re.sub(r"\W", "_", label)


@lru_cache(maxsize=1)
def routes() -> tuple[Operation, ...]:
    """Every operation of the three services; served ones first so they win any collision."""
    ops: list[Operation] = []
    for sname in SERVICES:
        svc = load_service(sname)
        for oname, op in svc.operations.items():
            http = op["http"]
            path, _, query = http["requestUri"].partition("?")
            fixed = tuple((k, v) for k, _, v in (p.partition("=") for p in query.split("&") if p))
            regex, labels = _compile_template(path)
            ops.append(
                Operation(
                    service=svc,
                    name=oname,
                    method=http["method"].upper(),
                    uri=http["requestUri"],
                    success_status=int(http.get("responseCode", 200)),
                    input_shape=op.get("input", {}).get("shape"),
                    output_shape=op.get("output", {}).get("shape"),
                    served=oname in SERVED[sname],
                    labels=labels,
                    regex=regex,
                    fixed_query=fixed,
                )
            )
    ops.sort(key=lambda o: not o.served)
    return tuple(ops)


@dataclass(frozen=True)
class Match:
    operation: Operation
    labels: dict[str, str]


class Router:
    """Method + raw path -> operation and its decoded URI labels."""

    def __init__(self) -> None:
        self._by_method: dict[str, list[Operation]] = {}
        for op in routes():
            self._by_method.setdefault(op.method, []).append(op)

    def match(self, method: str, raw_path: str, query: dict[str, list[str]] | None = None) -> Match | None:
        for op in self._by_method.get(method.upper(), ()):
            m = op.regex.match(raw_path)
            if m is None:
                continue
            if op.fixed_query and not all(k in (query or {}) for k, _ in op.fixed_query):
                continue
            labels = {name: unquote(m.group(_group(name))) for name in op.labels}
            return Match(op, labels)
        return None

    def path_exists(self, raw_path: str) -> bool:
        """True when some method serves this path (the answer for a wrong method differs)."""
        return any(op.regex.match(raw_path) for ops in self._by_method.values() for op in ops)


def operation(service: str, name: str) -> Operation:
    for op in routes():
        if op.service.name == service and op.name == name:
            return op
    raise KeyError(f"{service}.{name}")
