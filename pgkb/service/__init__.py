"""The Python API: one object with the operations of bedrock-agent and bedrock-agent-runtime.

Methods are boto3's operation names in snake_case with the wire's camelCase keyword arguments, and
return the dicts boto3 returns, so code moves between pgkb in-process, pgkb over HTTP and Bedrock.
"""

from __future__ import annotations

from pgkb.service.acl_ops import AclOps
from pgkb.service.agentic import AgenticOps
from pgkb.service.control import ControlPlane
from pgkb.service.dberrors import map_database_errors
from pgkb.service.documents import DocumentOps
from pgkb.service.generate import GenerateOps
from pgkb.service.jobs import JobControl
from pgkb.service.rerank import RerankOps
from pgkb.service.retrieve import RetrieveOps
from pgkb.service.tags import TagOps


# GenerateOps before RetrieveOps: its resolve() reads the knowledge base once per call.
@map_database_errors
class KnowledgeBaseService(ControlPlane, JobControl, DocumentOps, GenerateOps, RetrieveOps, RerankOps, TagOps, AclOps,
                           AgenticOps):
    """`KnowledgeBaseService(Settings())` opens (or starts) the database; use it as a context manager."""


__all__ = ["KnowledgeBaseService"]
