-- aws_bedrock.* : Aurora ML's Bedrock functions, served by pgkb's SQL endpoint through dblink.
-- {{dblink}} is replaced by the (quoted) schema of the dblink extension at install time.
-- The connection to pgkb is opened once per session (named connection), through the foreign server
-- aws_bedrock_pgkb whose user mapping holds the credentials: no secret appears in any function body.

CREATE OR REPLACE FUNCTION aws_bedrock._pgkb_connect() RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    detail text;
BEGIN
    IF coalesce('aws_bedrock_pgkb' = ANY ({{dblink}}.dblink_get_connections()), false) THEN
        RETURN;
    END IF;
    BEGIN
        PERFORM {{dblink}}.dblink_connect('aws_bedrock_pgkb', 'aws_bedrock_pgkb');
    EXCEPTION WHEN sqlclient_unable_to_establish_sqlconnection THEN
        GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
        IF detail LIKE '%password authentication failed%' THEN
            RAISE EXCEPTION 'pgkb''s model endpoint rejected the credentials of the user mapping for server aws_bedrock_pgkb'
                USING ERRCODE = 'invalid_password', DETAIL = detail,
                      HINT = 'Re-run "pgkb sql install" to store fresh credentials.';
        END IF;
        RAISE EXCEPTION 'pgkb''s model endpoint is unreachable (foreign server aws_bedrock_pgkb)'
            USING ERRCODE = 'sqlclient_unable_to_establish_sqlconnection', DETAIL = detail,
                  HINT = 'Start it with "pgkb sql serve" (or "pgkb serve"), or fix host/port with "pgkb sql install".';
    END;
END
$fn$;

-- One query, one text value back. A connection that died since the last call (pgkb restarted) is
-- reopened once; errors the endpoint raises (unknown model, bad input, ...) pass through with their
-- SQLSTATE and message.
CREATE OR REPLACE FUNCTION aws_bedrock._pgkb_value(query text) RETURNS text
LANGUAGE plpgsql AS $fn$
DECLARE
    result text;
BEGIN
    PERFORM aws_bedrock._pgkb_connect();
    BEGIN
        SELECT t.v INTO result FROM {{dblink}}.dblink('aws_bedrock_pgkb', query) AS t(v text);
    EXCEPTION WHEN connection_exception THEN
        PERFORM {{dblink}}.dblink_disconnect('aws_bedrock_pgkb');
        PERFORM aws_bedrock._pgkb_connect();
        SELECT t.v INTO result FROM {{dblink}}.dblink('aws_bedrock_pgkb', query) AS t(v text);
    END;
    RETURN result;
END
$fn$;

CREATE OR REPLACE FUNCTION aws_bedrock.invoke_model(
    model_id text, content_type text, accept_type text, model_input text) RETURNS text
LANGUAGE sql AS $fn$
    SELECT aws_bedrock._pgkb_value(format('SELECT pgkb_invoke(%L, %L, %L, %L)',
                                          model_id, content_type, accept_type, model_input))
$fn$;

CREATE OR REPLACE FUNCTION aws_bedrock.invoke_model_get_embeddings(
    model_id text, content_type text, json_key text, model_input text) RETURNS real[]
LANGUAGE sql AS $fn$
    SELECT aws_bedrock._pgkb_value(format('SELECT pgkb_invoke_get_embeddings(%L, %L, %L, %L)',
                                          model_id, content_type, json_key, model_input))::real[]
$fn$;

-- The set-based path: many texts, one model call. Row i of the result is texts[i] (NULL stays NULL).
CREATE OR REPLACE FUNCTION aws_bedrock.invoke_model_get_embeddings_batch(model_id text, texts text[])
RETURNS TABLE (ord integer, embedding real[])
LANGUAGE plpgsql AS $fn$
DECLARE
    query text := format('SELECT * FROM pgkb_embed_batch(%L, %L)', model_id, to_jsonb(texts)::text);
BEGIN
    PERFORM aws_bedrock._pgkb_connect();
    BEGIN
        RETURN QUERY SELECT t.ord, t.embedding
            FROM {{dblink}}.dblink('aws_bedrock_pgkb', query) AS t(ord integer, embedding real[]);
    EXCEPTION WHEN connection_exception THEN
        PERFORM {{dblink}}.dblink_disconnect('aws_bedrock_pgkb');
        PERFORM aws_bedrock._pgkb_connect();
        RETURN QUERY SELECT t.ord, t.embedding
            FROM {{dblink}}.dblink('aws_bedrock_pgkb', query) AS t(ord integer, embedding real[]);
    END;
END
$fn$;
