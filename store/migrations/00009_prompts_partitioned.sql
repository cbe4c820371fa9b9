-- prompts becomes a table partitioned by range of created_at, one
-- partition per UTC day, so that retention drops whole days instead of
-- deleting rows, and a table of months of logs costs each query only the
-- days it reads (issue 17).
--
-- Online and resumable. The rows already stored are not copied: the old
-- table becomes the partition prompts_legacy, for every time before a
-- cutoff two days ahead. Attaching it needs a proof that no row is at or
-- after the cutoff; a CHECK constraint proves it, added NOT VALID (no scan)
-- and validated under SHARE UPDATE EXCLUSIVE, which lets the gateways go
-- on writing meanwhile (step 2). The swap itself (step 3) takes the old
-- table's ACCESS EXCLUSIVE lock for as long as catalog changes take: no
-- row is read or written. Each step checks what is already done, so a
-- migration cut short is resumed by running it again.
--
-- After it:
--   * prompts is the partitioned parent; its primary key is still
--     prompts_pkey (organization_id, created_at, id), its policy, grants and
--     references trigger are those of the old table. Policies and grants
--     apply to the parent, through which every statement goes.
--   * Each partition (prompts_legacy, prompts_default, prompts_YYYYMMDD)
--     has forced RLS, the parent's one policy and no grant: the app role
--     cannot reach it directly, and whoever may is held to a tenant.
--   * prompts_default takes a row no day partition covers (a clock far
--     ahead, or a replay of a day that retention already dropped); it is
--     normally empty, and prompts_create_partitions moves its rows into a
--     day partition it creates.
--   * prompts_create_partitions(days_ahead) creates the day partitions
--     from yesterday to days_ahead days ahead that do not exist. The
--     gateway calls it at start and every hour (it runs as the owner,
--     since the app role owns nothing; concurrent calls take turns on an
--     advisory lock).

-- +goose NO TRANSACTION
-- +goose Up

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION prompts_create_partitions(days_ahead integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    d date;
    i integer;
    lo timestamptz;
    hi timestamptz;
    part text;
    created integer := 0;
    legacy_end timestamptz := '-infinity';
BEGIN
    IF NOT EXISTS (SELECT FROM pg_partitioned_table WHERE partrelid = 'public.prompts'::regclass) THEN
        RETURN 0;
    END IF;
    -- Maintenance, not a tenant's operation: refused inside a tenant
    -- context (THREATS 5), so no tenant's request can be made to run it.
    IF NULLIF(current_setting('app.current_tenant_id', true), '') IS NOT NULL THEN
        RAISE EXCEPTION 'prompts_create_partitions runs outside any tenant context'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('bulkhead.prompts_create_partitions'));
    -- The upper bound of prompts_legacy (FOR VALUES FROM (MINVALUE) TO ('...')), if attached.
    SELECT substring(pg_get_expr(c.relpartbound, c.oid) FROM $re$TO \('([^']+)'\)$re$)::timestamptz INTO legacy_end
    FROM pg_class c WHERE c.oid = to_regclass('public.prompts_legacy') AND c.relispartition;
    legacy_end := coalesce(legacy_end, '-infinity');
    FOR i IN -1 .. least(greatest(days_ahead, 1), 60) LOOP
        d := today + i;
        part := 'prompts_' || to_char(d, 'YYYYMMDD');
        CONTINUE WHEN to_regclass('public.' || part) IS NOT NULL;
        lo := d::timestamp AT TIME ZONE 'UTC';
        hi := (d + 1)::timestamp AT TIME ZONE 'UTC';
        CONTINUE WHEN lo < legacy_end; -- the legacy partition's
        IF EXISTS (SELECT FROM public.prompts_default WHERE created_at >= lo AND created_at < hi) THEN
            -- Rows of that day wait in the default partition: the new
            -- partition takes them over, in this transaction.
            EXECUTE format('CREATE TABLE public.%I (LIKE public.prompts INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
            EXECUTE format('WITH moved AS (DELETE FROM public.prompts_default WHERE created_at >= %L AND created_at < %L RETURNING *)
                            INSERT INTO public.%I SELECT * FROM moved', lo, hi, part);
            EXECUTE format('ALTER TABLE public.prompts ATTACH PARTITION public.%I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
        ELSE
            EXECUTE format('CREATE TABLE public.%I PARTITION OF public.prompts FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
        END IF;
        EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY', part);
        EXECUTE format('CREATE POLICY tenant_isolation ON public.%I
            USING (organization_id = (SELECT NULLIF(current_setting(''app.current_tenant_id'', true), '''')::uuid))
            WITH CHECK (organization_id = (SELECT NULLIF(current_setting(''app.current_tenant_id'', true), '''')::uuid))', part);
        EXECUTE format('REVOKE ALL ON public.%I FROM PUBLIC', part);
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION prompts_create_partitions(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION prompts_create_partitions(integer) TO bulkhead_app;

-- Step 1: the bound of the legacy partition, two UTC days ahead, named by
-- its date so that a resumed migration finds it; NOT VALID: no scan.
-- +goose StatementBegin
DO $$
DECLARE
    cutoff date := (now() AT TIME ZONE 'UTC')::date + 2;
BEGIN
    IF EXISTS (SELECT FROM pg_partitioned_table WHERE partrelid = 'public.prompts'::regclass)
       OR EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'public.prompts'::regclass AND conname LIKE 'prompts\_before\_%') THEN
        RETURN;
    END IF;
    EXECUTE format('ALTER TABLE public.prompts ADD CONSTRAINT %I CHECK (created_at < %L) NOT VALID',
                   'prompts_before_' || to_char(cutoff, 'YYYYMMDD'), cutoff::timestamp AT TIME ZONE 'UTC');
END
$$;
-- +goose StatementEnd

-- Step 2: validate it: a scan of the table under SHARE UPDATE EXCLUSIVE,
-- which lets inserts and reads go on.
-- +goose StatementBegin
DO $$
DECLARE
    bound text;
BEGIN
    SELECT conname INTO bound FROM pg_constraint
    WHERE conrelid = 'public.prompts'::regclass AND conname LIKE 'prompts\_before\_%' AND NOT convalidated;
    IF bound IS NOT NULL THEN
        EXECUTE format('ALTER TABLE public.prompts VALIDATE CONSTRAINT %I', bound);
    END IF;
END
$$;
-- +goose StatementEnd

-- Step 3: the swap, in one transaction.
-- +goose StatementBegin
DO $$
DECLARE
    bound text;
    cutoff timestamptz;
BEGIN
    IF EXISTS (SELECT FROM pg_partitioned_table WHERE partrelid = 'public.prompts'::regclass) THEN
        RETURN;
    END IF;
    LOCK TABLE public.prompts IN ACCESS EXCLUSIVE MODE;
    SELECT conname INTO STRICT bound FROM pg_constraint
    WHERE conrelid = 'public.prompts'::regclass AND conname LIKE 'prompts\_before\_%' AND convalidated;
    cutoff := to_date(substring(bound FROM 16), 'YYYYMMDD')::timestamp AT TIME ZONE 'UTC';

    ALTER TABLE public.prompts RENAME TO prompts_legacy;
    ALTER INDEX public.prompts_pkey RENAME TO prompts_legacy_pkey;
    DROP TRIGGER prompts_check_references ON public.prompts_legacy;
    REVOKE ALL ON public.prompts_legacy FROM PUBLIC, bulkhead_app;

    CREATE TABLE public.prompts (LIKE public.prompts_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)
        PARTITION BY RANGE (created_at);
    EXECUTE format('ALTER TABLE public.prompts DROP CONSTRAINT %I', bound);
    ALTER TABLE public.prompts ADD CONSTRAINT prompts_pkey PRIMARY KEY (organization_id, created_at, id);
    EXECUTE format('ALTER TABLE public.prompts ATTACH PARTITION public.prompts_legacy FOR VALUES FROM (MINVALUE) TO (%L)', cutoff);

    CREATE TABLE public.prompts_default PARTITION OF public.prompts DEFAULT;
    ALTER TABLE public.prompts_default ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON public.prompts_default
        USING (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid))
        WITH CHECK (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid));
    REVOKE ALL ON public.prompts_default FROM PUBLIC;

    ALTER TABLE public.prompts ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON public.prompts
        USING (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid))
        WITH CHECK (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid));
    REVOKE ALL ON public.prompts FROM PUBLIC;
    GRANT SELECT, INSERT ON public.prompts TO bulkhead_app;
    CREATE TRIGGER prompts_check_references
        AFTER INSERT ON public.prompts REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION prompts_check_references();
END
$$;
-- +goose StatementEnd

SELECT prompts_create_partitions(14);

-- +goose Down
-- Offline: every row is copied back into a plain table.
-- +goose StatementBegin
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_partitioned_table WHERE partrelid = 'public.prompts'::regclass) THEN
        RETURN;
    END IF;
    LOCK TABLE public.prompts IN ACCESS EXCLUSIVE MODE;
    ALTER TABLE public.prompts RENAME TO prompts_partitioned;
    ALTER INDEX public.prompts_pkey RENAME TO prompts_partitioned_pkey;
    CREATE TABLE public.prompts (LIKE public.prompts_partitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE);
    INSERT INTO public.prompts SELECT * FROM public.prompts_partitioned;
    ALTER TABLE public.prompts ADD CONSTRAINT prompts_pkey PRIMARY KEY (organization_id, created_at, id);
    DROP TABLE public.prompts_partitioned;
    ALTER TABLE public.prompts ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON public.prompts
        USING (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid))
        WITH CHECK (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid));
    REVOKE ALL ON public.prompts FROM PUBLIC;
    GRANT SELECT, INSERT ON public.prompts TO bulkhead_app;
    CREATE TRIGGER prompts_check_references
        AFTER INSERT ON public.prompts REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION prompts_check_references();
END
$$;
-- +goose StatementEnd
DROP FUNCTION IF EXISTS prompts_create_partitions(integer);
