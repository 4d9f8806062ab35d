"""The web console on a MANAGED knowledge base: managedSearchConfiguration and the user field (userContext)."""

from __future__ import annotations

import json

from acl_helpers import custom_source, inline_doc, managed_kb
from server_helpers import running
from test_web_console import _results, _retrieve, browser, chromium, page  # noqa: F401  (fixtures)
from web_console_cdp import Page

from pgkb.config import Settings
from pgkb.service import KnowledgeBaseService


def test_console_retrieves_as_the_named_user(page: Page, settings: Settings) -> None:  # noqa: F811
    from pgkb.server.run import build_app

    with KnowledgeBaseService(settings) as svc:
        kb = managed_kb(svc)
        ds = custom_source(svc, kb, acl=True)
        svc.ingest_knowledge_base_documents(knowledgeBaseId=kb, dataSourceId=ds, documents=[
            inline_doc("roster", "The albatross night shift roster.", [("nina@example.com", "ALLOW")])])
    with running(build_app(settings, no_auth=True)) as url:
        page.navigate(url + "/console")
        button = f"#kbs button[data-kb-id='{kb}']"
        page.wait_for(f"!!document.querySelector({json.dumps(button)})")
        page.evaluate(f"document.querySelector({json.dumps(button)}).click()")
        page.wait_for("!document.getElementById('query').hidden")
        _retrieve(page, "albatross roster")  # nobody named: the ACL-enabled source answers nothing
        page.wait_for("document.getElementById('query-state').textContent.includes('result')")
        assert _results(page) == [] and page.evaluate("document.getElementById('error').hidden")
        page.evaluate("document.getElementById('user').value = 'nina@example.com'")
        _retrieve(page, "albatross roster")
        page.wait_for("document.querySelectorAll('#results > li').length === 1")
        assert "albatross" in _results(page)[0]["text"]
        assert page.problems() == []
    with KnowledgeBaseService(settings) as svc:
        svc.delete_knowledge_base(knowledgeBaseId=kb)
