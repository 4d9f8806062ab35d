"""TagResource, UntagResource, ListTagsForResource (bedrock-agent) for knowledge bases.

Infrastructure-as-code tools read and write tags right after creating a resource, so a knowledge base
keeps its tags in the catalog (CreateKnowledgeBase's `tags` too). Bedrock tags agents, flows and
prompts as well; pgkb has only knowledge bases, and says so for any other ARN.
"""

from __future__ import annotations

import re
from typing import Any

from pgkb import kb_tags
from pgkb.errors import ValidationError
from pgkb.service.base import Collaborator
from pgkb.store import catalog

_KB_ARN = re.compile(r"^arn:aws[a-z-]*:bedrock:[a-z0-9-]*:[0-9]{0,12}:knowledge-base/([0-9A-Za-z]{10})$")
MAX_TAGS = 50  # per resource, as AWS


class TagOps(Collaborator):
    def _tagged_kb(self, resource_arn: str) -> str:
        m = _KB_ARN.match(resource_arn or "")
        if m is None:
            raise ValidationError(f"resourceArn {resource_arn!r} is not a knowledge base ARN "
                                  "(arn:aws:bedrock:<region>:<account>:knowledge-base/<id>); pgkb tags knowledge bases only")
        return m.group(1)

    def _update(self, resource_arn: str, add: dict[str, str], remove: list[str]) -> dict[str, str]:
        kb_id = self._tagged_kb(resource_arn)
        with self.db.connection() as conn, conn.transaction():
            tags = catalog.update_tags(conn, kb_id, add, remove)
            if len(tags) > MAX_TAGS:  # rolled back with the transaction
                raise ValidationError(f"a resource has at most {MAX_TAGS} tags; this would make {len(tags)}")
            kb_tags.check(tags)  # pgkb's own tags keep their form (rolled back too)
        self.forget(kb_id)  # the search tags are read with the knowledge base: seen at once
        return tags

    def tag_resource(self, *, resourceArn: str, tags: dict[str, str]) -> dict[str, Any]:
        self._update(resourceArn, dict(tags), [])
        return {}

    def untag_resource(self, *, resourceArn: str, tagKeys: list[str]) -> dict[str, Any]:
        self._update(resourceArn, {}, list(tagKeys))
        return {}

    def list_tags_for_resource(self, *, resourceArn: str) -> dict[str, Any]:
        kb_id = self._tagged_kb(resourceArn)
        with self.db.connection() as conn:
            return {"tags": catalog.get_tags(conn, kb_id)}
