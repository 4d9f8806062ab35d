"""AgenticRetrieveStream's machinery: the request (request.py), the question splitter (split.py), the
planners (planners.py) and the run that turns them into stream events (engine.py). The service hook is
pgkb.service.agentic; nothing here touches the database or the wire."""
