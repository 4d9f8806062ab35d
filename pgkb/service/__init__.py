"""The Python API: one object with the operations of bedrock-agent and bedrock-agent-runtime.

Methods are boto3's operation names in snake_case with the wire's camelCase keyword arguments, and
return the dicts boto3 returns, so code moves between pgkb in-process, pgkb over HTTP and Bedrock.

`KnowledgeBaseService` is a facade: it builds its collaborators once, each given what it needs, and
forwards every operation to the one that owns it (the table below is the whole map). Adding an
operation group is one collaborator built in `__init__` and one `_forward` line per operation.

    ServiceCore      settings, home database, registered databases         (base.py)
    KnowledgeBases   knowledge bases resolved for work, cached              (base.py)
    ControlPlane     knowledge bases, data sources, storage configuration   (control.py)
    JobControl       ingestion jobs: run, start in a thread, stop, list     (jobs.py)
    DocumentOps      direct ingestion, document status                      (documents.py)
    RetrieveOps      Retrieve                                               (retrieve.py)
    GenerateOps      RetrieveAndGenerate (+ stream), over RetrieveOps       (generate.py)
    RerankOps        Rerank                                                 (rerank.py)
    TagOps           resource tags                                          (tags.py)
    AclOps           document ACL checks, GetDocumentContent                (acl_ops.py)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from pgkb.config import Settings
from pgkb.db import Database
from pgkb.kb import KnowledgeBase
from pgkb.service.acl_ops import AclOps
from pgkb.service.agentic import AgenticOps
from pgkb.service.base import KnowledgeBases, ServiceCore
from pgkb.service.control import ControlPlane
from pgkb.service.dberrors import map_database_errors
from pgkb.service.documents import DocumentOps
from pgkb.service.generate import GenerateOps
from pgkb.service.jobs import JobControl
from pgkb.service.rerank import RerankOps
from pgkb.service.retrieve import RetrieveOps
from pgkb.service.tags import TagOps

P = ParamSpec("P")
R = TypeVar("R")


def _forward(collaborator: str, method: Callable[Concatenate[Any, P], R]) -> Callable[Concatenate[Any, P], R]:
    """A facade method calling `method` on the collaborator held in attribute `collaborator`; it keeps the
    collaborator method's name, signature and docstring (the server and `help()` read them)."""
    name = method.__name__

    @functools.wraps(method)
    def call(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return getattr(getattr(self, collaborator), name)(*args, **kwargs)  # type: ignore[no-any-return]

    return call


@map_database_errors
class KnowledgeBaseService:
    """`KnowledgeBaseService(Settings())` opens (or starts) the database; use it as a context manager."""

    def __init__(self, settings: Settings | None = None, *, database: Database | None = None) -> None:
        self.core = ServiceCore(settings, database=database)
        self.kbs = KnowledgeBases(self.core)
        self.control = ControlPlane(self.core, self.kbs)
        self.jobs = JobControl(self.core, self.kbs)
        self.documents = DocumentOps(self.core, self.kbs)
        self.retriever = RetrieveOps(self.core, self.kbs)
        self.generator = GenerateOps(self.core, self.kbs, self.retriever)
        self.reranker = RerankOps(self.core, self.kbs)
        self.tags = TagOps(self.core, self.kbs)
        self.acls = AclOps(self.core, self.kbs)
        self.agentic = AgenticOps(self.core, self.kbs, self.retriever)

    def close(self) -> None:
        self.jobs.stop_jobs()
        self.core.close()

    def __enter__(self) -> KnowledgeBaseService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ shared state

    @property
    def settings(self) -> Settings:
        return self.core.settings

    @property
    def db(self) -> Database:
        return self.core.db

    @property
    def database_name(self) -> str:
        return self.core.database_name

    @property
    def region(self) -> str:
        return self.core.region

    @property
    def account(self) -> str:
        return self.core.account

    @property
    def cluster_arn(self) -> str:
        return self.core.cluster_arn

    @property
    def secret_arn(self) -> str:
        return self.core.secret_arn

    @property
    def query_embedder(self) -> Any:
        """Set by the server to batch concurrent queries' embeddings; None: the model directly."""
        return self.retriever.query_embedder

    @query_embedder.setter
    def query_embedder(self, fn: Any) -> None:
        self.retriever.query_embedder = fn

    def db_info(self) -> dict[str, Any]:
        return self.core.db_info()

    def database_for(self, rds: dict[str, Any]) -> Database:
        return self.core.database_for(rds)

    def resolve(self, kb_id: str) -> KnowledgeBase:
        return self.kbs.resolve(kb_id)

    def forget(self, kb_id: str) -> None:
        self.kbs.forget(kb_id)

    # ------------------------------------------------------------ operations, by owner

    home_storage = _forward("control", ControlPlane.home_storage)
    create_knowledge_base = _forward("control", ControlPlane.create_knowledge_base)
    get_knowledge_base = _forward("control", ControlPlane.get_knowledge_base)
    list_knowledge_bases = _forward("control", ControlPlane.list_knowledge_bases)
    update_knowledge_base = _forward("control", ControlPlane.update_knowledge_base)
    delete_knowledge_base = _forward("control", ControlPlane.delete_knowledge_base)
    create_data_source = _forward("control", ControlPlane.create_data_source)
    get_data_source = _forward("control", ControlPlane.get_data_source)
    list_data_sources = _forward("control", ControlPlane.list_data_sources)
    update_data_source = _forward("control", ControlPlane.update_data_source)
    delete_data_source = _forward("control", ControlPlane.delete_data_source)

    run_ingestion_job = _forward("jobs", JobControl.run_ingestion_job)
    start_ingestion_job = _forward("jobs", JobControl.start_ingestion_job)
    get_ingestion_job = _forward("jobs", JobControl.get_ingestion_job)
    list_ingestion_jobs = _forward("jobs", JobControl.list_ingestion_jobs)
    stop_ingestion_job = _forward("jobs", JobControl.stop_ingestion_job)
    wait_for_jobs = _forward("jobs", JobControl.wait_for_jobs)
    stop_jobs = _forward("jobs", JobControl.stop_jobs)
    work_ingestion_queue = _forward("jobs", JobControl.work_ingestion_queue)
    source_for = _forward("jobs", JobControl.source_for)

    ingest_knowledge_base_documents = _forward("documents", DocumentOps.ingest_knowledge_base_documents)
    delete_knowledge_base_documents = _forward("documents", DocumentOps.delete_knowledge_base_documents)
    get_knowledge_base_documents = _forward("documents", DocumentOps.get_knowledge_base_documents)
    list_knowledge_base_documents = _forward("documents", DocumentOps.list_knowledge_base_documents)

    retrieve = _forward("retriever", RetrieveOps.retrieve)
    retrieve_results = _forward("retriever", RetrieveOps.retrieve_results)
    embed_query = _forward("retriever", RetrieveOps.embed_query)

    retrieve_and_generate = _forward("generator", GenerateOps.retrieve_and_generate)
    retrieve_and_generate_stream = _forward("generator", GenerateOps.retrieve_and_generate_stream)

    rerank = _forward("reranker", RerankOps.rerank)

    tag_resource = _forward("tags", TagOps.tag_resource)
    untag_resource = _forward("tags", TagOps.untag_resource)
    list_tags_for_resource = _forward("tags", TagOps.list_tags_for_resource)

    check_ingested_document_acl = _forward("acls", AclOps.check_ingested_document_acl)
    get_ingested_document_acl = _forward("acls", AclOps.get_ingested_document_acl)
    get_document_content = _forward("acls", AclOps.get_document_content)
    document_content_response = _forward("acls", AclOps.document_content_response)

    agentic_retrieve_stream = _forward("agentic", AgenticOps.agentic_retrieve_stream)


__all__ = ["KnowledgeBaseService"]
