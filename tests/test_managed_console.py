"""The web console on a MANAGED knowledge base: managedSearchConfiguration and the user field (userContext)."""

from __future__ import annotations

import json

from helpers.acl import custom_source, inline_doc, managed_kb
from helpers.servers import running
from test_web_console import _results, _retrieve, _text, browser, chromium, page  # noqa: F401  (fixtures)
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


def test_console_answers_in_several_steps(page: Page, settings: Settings, tmp_path) -> None:  # noqa: F811  # type: ignore[no-untyped-def]
    """The Answer button with "in several steps" calls AgenticRetrieveStream, decodes its event stream
    in the browser, and shows the cited answer, its references and the steps taken."""
    import os
    import shutil

    from pgkb.server.run import build_app

    with KnowledgeBaseService(settings) as svc:
        kb = managed_kb(svc)
        ds = custom_source(svc, kb, acl=False)
        svc.ingest_knowledge_base_documents(knowledgeBaseId=kb, dataSourceId=ds, documents=[
            inline_doc("tides", "Ocean tides are caused by the gravitational pull of the moon on the sea."),
            inline_doc("bread", "Sourdough bread rises because wild yeast ferments the dough for hours."),
            inline_doc("lava", "Volcanoes erupt lava when pressure in the magma chamber grows too high.")])
    with running(build_app(settings, no_auth=True)) as url:
        page.navigate(url + "/console")
        button = f"#kbs button[data-kb-id='{kb}']"
        page.wait_for(f"!!document.querySelector({json.dumps(button)})")
        page.evaluate(f"document.querySelector({json.dumps(button)}).click()")
        page.wait_for("!document.getElementById('query').hidden")
        page.evaluate("""(() => {
          document.getElementById('q').value = 'What causes ocean tides, and why does sourdough bread rise?';
          document.getElementById('agentic').checked = true;
          document.getElementById('ask').click();
        })()""")
        page.wait_for("document.getElementById('answer-state').textContent.includes('steps')")
        assert page.evaluate("document.getElementById('error').hidden"), _text(page, "#error")
        steps = page.evaluate("document.getElementById('answer').dataset.steps").split(",")
        assert "Planning" in steps
        answer = _text(page, "#answer-text")
        assert "moon" in answer and "yeast" in answer and "[" in answer
        cited = page.evaluate("[...document.querySelectorAll('#answer-text .cited')].map((s) => s.textContent)")
        refs = page.evaluate("[...document.querySelectorAll('#references .chunk')].map((p) => p.textContent)")
        assert cited and all(any(c in r for r in refs) for c in cited)  # every cited span is in a reference
        if os.environ.get("PGKB_CONSOLE_AGENTIC_SCREENSHOT"):
            shutil.copy(page.screenshot(tmp_path / "agentic.png"), os.environ["PGKB_CONSOLE_AGENTIC_SCREENSHOT"])
        assert page.problems() == []
    with KnowledgeBaseService(settings) as svc:
        svc.delete_knowledge_base(knowledgeBaseId=kb)
