-- MANAGED knowledge bases' ACL lists stay in their rows (STORAGE MAIN; pgkb.store.ddl.acl_columns):
-- a filtered search checks the allow list of every candidate it visits, and a list TOAST moved out of
-- line costs a TOAST index probe and fetch each time. Tables made before this keep their old rows as
-- they are (rewritten rows, e.g. by a re-sync or VACUUM FULL, take the new storage); new rows take it.
DO $$
DECLARE
    col record;
BEGIN
    FOR col IN
        SELECT c.table_schema, c.table_name, c.column_name
        FROM information_schema.columns c
        WHERE c.table_schema = 'pgkb_managed' AND c.column_name IN ('acl_allow', 'acl_deny')
    LOOP
        EXECUTE format('ALTER TABLE %I.%I ALTER COLUMN %I SET STORAGE MAIN', col.table_schema, col.table_name, col.column_name);
    END LOOP;
END
$$;
