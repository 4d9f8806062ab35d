-- Vectorizers: keep a table's vector column in sync with its text column.
-- A trigger queues the primary key of every inserted row and of every row whose text changed; pgkb's
-- worker claims queue items (SKIP LOCKED + a lease, so no lock is held during the model call), embeds,
-- writes the vector only if the text is still the one it embedded, and deletes the item. Failures stay
-- in the queue with their reason, attempt count and next retry time (exponential backoff).
-- {{vector}} is replaced by the quoted schema of the pgvector extension.

CREATE TABLE IF NOT EXISTS aws_bedrock.vectorizer (
    id            serial PRIMARY KEY,
    source        regclass NOT NULL,
    pk_columns    name[] NOT NULL,
    text_column   name NOT NULL,
    vector_column name NOT NULL,
    model_id      text NOT NULL,
    queue_table   name,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, vector_column)
);

CREATE OR REPLACE FUNCTION aws_bedrock._vectorizer_pk(source regclass) RETURNS name[]
LANGUAGE sql STABLE AS $fn$
    SELECT array_agg(a.attname ORDER BY k.ord)
    FROM pg_index i
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = source AND i.indisprimary
$fn$;

-- "a, b" / "q.a = s.a AND q.b = s.b" style lists over the primary key columns.
CREATE OR REPLACE FUNCTION aws_bedrock._cols(cols name[], template text, sep text) RETURNS text
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT string_agg(format(template, c), sep ORDER BY o) FROM unnest(cols) WITH ORDINALITY AS u(c, o)
$fn$;

-- Register (or re-configure) a vectorizer. Re-running it with another model or text column updates the
-- configuration in place; `backfill` queues the rows whose vector is NULL.
CREATE OR REPLACE FUNCTION aws_bedrock.create_vectorizer(
    source regclass, text_column name, vector_column name, model_id text, backfill boolean DEFAULT true)
RETURNS integer
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    v_id   integer;
    pk     name[];
    q      name;
    pk_defs text;
    conflict_set text := 'queued_at = clock_timestamp(), attempts = 0, last_error = NULL, '
                         'last_failed_at = NULL, next_attempt_at = now(), claimed_until = NULL';
    vtype  text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = source AND attname = text_column
                   AND attnum > 0 AND NOT attisdropped) THEN
        RAISE EXCEPTION 'column "%" does not exist in %', text_column, source USING ERRCODE = 'undefined_column';
    END IF;
    SELECT format_type(atttypid, atttypmod) INTO vtype FROM pg_attribute
     WHERE attrelid = source AND attname = vector_column AND attnum > 0 AND NOT attisdropped;
    IF vtype IS NULL THEN
        RAISE EXCEPTION 'column "%" does not exist in %', vector_column, source USING ERRCODE = 'undefined_column';
    END IF;
    IF vtype NOT LIKE '%vector%' THEN
        RAISE EXCEPTION 'column "%" of % is %, not a vector column', vector_column, source, vtype
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    pk := aws_bedrock._vectorizer_pk(source);
    IF pk IS NULL THEN
        RAISE EXCEPTION '% has no primary key; a vectorizer needs one to find rows again', source
            USING ERRCODE = 'invalid_table_definition';
    END IF;
    IF pk && ARRAY['queued_at', 'attempts', 'last_error', 'last_failed_at', 'next_attempt_at', 'claimed_until']::name[] THEN
        RAISE EXCEPTION 'primary key column names of % clash with the queue''s own columns', source
            USING ERRCODE = 'duplicate_column';
    END IF;

    INSERT INTO aws_bedrock.vectorizer AS v (source, pk_columns, text_column, vector_column, model_id)
    VALUES (source, pk, text_column, vector_column, model_id)
    ON CONFLICT (source, vector_column) DO UPDATE
        SET text_column = EXCLUDED.text_column, model_id = EXCLUDED.model_id,
            pk_columns = EXCLUDED.pk_columns, updated_at = now()
    RETURNING v.id INTO v_id;
    q := 'vectorizer_queue_' || v_id;
    UPDATE aws_bedrock.vectorizer SET queue_table = q WHERE id = v_id;

    SELECT string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY k.o)
      INTO pk_defs
      FROM unnest(pk) WITH ORDINALITY AS k(c, o)
      JOIN pg_attribute a ON a.attrelid = source AND a.attname = k.c;
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS aws_bedrock.%I (%s, '
        'queued_at timestamptz NOT NULL DEFAULT clock_timestamp(), attempts integer NOT NULL DEFAULT 0, '
        'last_error text, last_failed_at timestamptz, next_attempt_at timestamptz NOT NULL DEFAULT now(), '
        'claimed_until timestamptz, PRIMARY KEY (%s))',
        q, pk_defs, aws_bedrock._cols(pk, '%I', ', '));
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON aws_bedrock.%I (next_attempt_at)', q || '_next', q);

    -- Inserts: one statement-level trigger, set-based over the transition table.
    EXECUTE format(
        'CREATE OR REPLACE FUNCTION aws_bedrock.%I() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER '
        'SET search_path = pg_catalog, pg_temp AS %L',
        q || '_ins',
        format('BEGIN INSERT INTO aws_bedrock.%I (%s) SELECT %s FROM new_rows '
               'ON CONFLICT (%s) DO UPDATE SET %s; PERFORM pg_notify(''aws_bedrock_vectorizer'', %L); RETURN NULL; END',
               q, aws_bedrock._cols(pk, '%I', ', '), aws_bedrock._cols(pk, '%I', ', '),
               aws_bedrock._cols(pk, '%I', ', '), conflict_set, v_id::text));
    -- Updates: row level, and only when the text really changed (the WHEN clause below).
    EXECUTE format(
        'CREATE OR REPLACE FUNCTION aws_bedrock.%I() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER '
        'SET search_path = pg_catalog, pg_temp AS %L',
        q || '_upd',
        format('BEGIN INSERT INTO aws_bedrock.%I (%s) VALUES (%s) '
               'ON CONFLICT (%s) DO UPDATE SET %s; PERFORM pg_notify(''aws_bedrock_vectorizer'', %L); RETURN NULL; END',
               q, aws_bedrock._cols(pk, '%I', ', '), aws_bedrock._cols(pk, 'NEW.%I', ', '),
               aws_bedrock._cols(pk, '%I', ', '), conflict_set, v_id::text));

    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', q || '_ins', source);
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', q || '_upd', source);
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows '
                   'FOR EACH STATEMENT EXECUTE FUNCTION aws_bedrock.%I()', q || '_ins', source, q || '_ins');
    EXECUTE format('CREATE TRIGGER %I AFTER UPDATE OF %I ON %s FOR EACH ROW '
                   'WHEN (NEW.%I IS DISTINCT FROM OLD.%I) EXECUTE FUNCTION aws_bedrock.%I()',
                   q || '_upd', text_column, source, text_column, text_column, q || '_upd');
    IF backfill THEN
        EXECUTE format('INSERT INTO aws_bedrock.%I (%s) SELECT %s FROM %s WHERE %I IS NULL ON CONFLICT DO NOTHING',
                       q, aws_bedrock._cols(pk, '%I', ', '), aws_bedrock._cols(pk, '%I', ', '), source, vector_column);
    END IF;
    RETURN v_id;
END
$fn$;

CREATE OR REPLACE FUNCTION aws_bedrock.drop_vectorizer(vectorizer_id integer) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v aws_bedrock.vectorizer;
BEGIN
    SELECT * INTO v FROM aws_bedrock.vectorizer WHERE id = vectorizer_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'vectorizer % does not exist', vectorizer_id USING ERRCODE = 'undefined_object';
    END IF;
    IF to_regclass(v.source::text) IS NOT NULL THEN
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', v.queue_table || '_ins', v.source);
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', v.queue_table || '_upd', v.source);
    END IF;
    EXECUTE format('DROP FUNCTION IF EXISTS aws_bedrock.%I()', v.queue_table || '_ins');
    EXECUTE format('DROP FUNCTION IF EXISTS aws_bedrock.%I()', v.queue_table || '_upd');
    EXECUTE format('DROP TABLE IF EXISTS aws_bedrock.%I', v.queue_table);
    DELETE FROM aws_bedrock.vectorizer WHERE id = vectorizer_id;
END
$fn$;

-- Claim up to max_items due queue items for `lease`. Returns each item's key (jsonb), the queued_at it
-- was claimed at (the version the worker must complete), its attempt number, the current text and
-- whether the source row still exists.
CREATE OR REPLACE FUNCTION aws_bedrock.vectorizer_claim(vectorizer_id integer, max_items integer,
                                                        lease interval DEFAULT '5 minutes')
RETURNS TABLE (item_key jsonb, queued_at timestamptz, attempts integer, content text, row_exists boolean)
LANGUAGE plpgsql AS $fn$
DECLARE
    v aws_bedrock.vectorizer;
BEGIN
    SELECT * INTO v FROM aws_bedrock.vectorizer WHERE id = vectorizer_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'vectorizer % does not exist', vectorizer_id USING ERRCODE = 'undefined_object';
    END IF;
    RETURN QUERY EXECUTE format(
        'WITH due AS (SELECT %1$s FROM aws_bedrock.%2$I '
        '             WHERE next_attempt_at <= now() AND (claimed_until IS NULL OR claimed_until < clock_timestamp()) '
        '             ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED), '
        '     claimed AS (UPDATE aws_bedrock.%2$I q SET claimed_until = clock_timestamp() + $2, attempts = q.attempts + 1 '
        '                 FROM due WHERE %3$s RETURNING q.*) '
        'SELECT jsonb_build_object(%4$s), c.queued_at, c.attempts, s.%5$I::text, s.%6$I IS NOT NULL '
        'FROM claimed c LEFT JOIN %7$s s ON %8$s',
        aws_bedrock._cols(v.pk_columns, '%I', ', '), v.queue_table,
        aws_bedrock._cols(v.pk_columns, 'q.%1$I = due.%1$I', ' AND '),
        aws_bedrock._cols(v.pk_columns, '%1$L, c.%1$I', ', '),
        v.text_column, v.pk_columns[1], v.source,
        aws_bedrock._cols(v.pk_columns, 's.%1$I = c.%1$I', ' AND '))
    USING max_items, lease;
END
$fn$;

-- Write embeddings for claimed items (NULL embedding for a NULL text) and drop the items. A row whose
-- text changed since the claim keeps its queue item (re-queued by the trigger) and is not written.
CREATE OR REPLACE FUNCTION aws_bedrock.vectorizer_complete(vectorizer_id integer, item_keys jsonb[],
    queued_ats timestamptz[], contents text[], embeddings {{vector}}.vector[])
RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    v aws_bedrock.vectorizer;
    n integer;
BEGIN
    SELECT * INTO v FROM aws_bedrock.vectorizer WHERE id = vectorizer_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'vectorizer % does not exist', vectorizer_id USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE format(
        'WITH r AS (SELECT u.qa, u.t, u.e, %1$s FROM unnest($1, $2, $3, $4) AS u(k, qa, t, e) '
        '           CROSS JOIN LATERAL jsonb_populate_record(NULL::%2$s, u.k) AS x), '
        '     w AS (UPDATE %2$s s SET %3$I = r.e FROM r WHERE %4$s AND s.%5$I IS NOT DISTINCT FROM r.t RETURNING 1), '
        '     d AS (DELETE FROM aws_bedrock.%6$I q USING r WHERE %7$s AND q.queued_at = r.qa RETURNING 1) '
        'SELECT count(*) FROM d',
        aws_bedrock._cols(v.pk_columns, 'x.%I', ', '), v.source, v.vector_column,
        aws_bedrock._cols(v.pk_columns, 's.%1$I = r.%1$I', ' AND '), v.text_column, v.queue_table,
        aws_bedrock._cols(v.pk_columns, 'q.%1$I = r.%1$I', ' AND '))
    INTO n USING item_keys, queued_ats, contents, embeddings;
    RETURN n;
END
$fn$;

-- Record failures: the item stays queued, due again after base_delay * 2^(attempts-1) (capped).
CREATE OR REPLACE FUNCTION aws_bedrock.vectorizer_fail(vectorizer_id integer, item_keys jsonb[],
    queued_ats timestamptz[], errors text[], base_delay interval DEFAULT '10 seconds',
    max_delay interval DEFAULT '1 hour')
RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    v aws_bedrock.vectorizer;
    n integer;
BEGIN
    SELECT * INTO v FROM aws_bedrock.vectorizer WHERE id = vectorizer_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'vectorizer % does not exist', vectorizer_id USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE format(
        'WITH r AS (SELECT u.qa, u.err, %1$s FROM unnest($1, $2, $3) AS u(k, qa, err) '
        '           CROSS JOIN LATERAL jsonb_populate_record(NULL::%2$s, u.k) AS x) '
        'UPDATE aws_bedrock.%3$I q SET last_error = r.err, last_failed_at = now(), claimed_until = NULL, '
        '       next_attempt_at = now() + least($5, $4 * power(2, least(greatest(q.attempts, 1) - 1, 30))) '
        'FROM r WHERE %4$s AND q.queued_at = r.qa',
        aws_bedrock._cols(v.pk_columns, 'x.%I', ', '), v.source, v.queue_table,
        aws_bedrock._cols(v.pk_columns, 'q.%1$I = r.%1$I', ' AND '))
    USING item_keys, queued_ats, errors, base_delay, max_delay;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;

-- Make every failed item of a vectorizer due now (after fixing its cause, e.g. the model).
CREATE OR REPLACE FUNCTION aws_bedrock.vectorizer_retry_now(vectorizer_id integer) RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    q name;
    n integer;
BEGIN
    SELECT queue_table INTO q FROM aws_bedrock.vectorizer WHERE id = vectorizer_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'vectorizer % does not exist', vectorizer_id USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE format('UPDATE aws_bedrock.%I SET next_attempt_at = now() WHERE last_error IS NOT NULL', q);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;

-- Queue length, failures and the oldest item, per vectorizer.
CREATE OR REPLACE FUNCTION aws_bedrock.vectorizer_status()
RETURNS TABLE (id integer, source regclass, text_column name, vector_column name, model_id text,
               pending bigint, failed bigint, oldest timestamptz)
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    v aws_bedrock.vectorizer;
BEGIN
    FOR v IN SELECT * FROM aws_bedrock.vectorizer ORDER BY 1 LOOP
        RETURN QUERY EXECUTE format(
            'SELECT $1, $2, $3, $4, $5, count(*), count(*) FILTER (WHERE last_error IS NOT NULL), min(queued_at) '
            'FROM aws_bedrock.%I', v.queue_table)
        USING v.id, v.source, v.text_column, v.vector_column, v.model_id;
    END LOOP;
END
$fn$;
