-- Tenant placement (issue 14): where an organization's data plane lives.
--
--   * organizations.placement: 'shared' (the tables of this schema, as
--     before), 'schema' (the same tables in a schema of its own in this
--     database, named t_ and the 32 hex digits of its id: see
--     store/placement.go) or 'database:NAME' (a database target that the
--     configuration names: database_targets). Control-plane data: the app
--     role reads it (it routes the request log and the read API by it) and
--     cannot change it.
--
--   * prompts_apply_placed_retention(max_rows): prompts_apply_retention
--     (00010) for the organizations placed in a schema: one bounded step
--     deleting rows past each one's retention in its schema, audited per
--     organization, refused in a tenant context. The app role runs it
--     beside prompts_apply_retention: it reads the retentions from the
--     database, never from the caller. (Database targets have no
--     organizations table: their retention is applied by the owner's
--     bulkhead retention run.)
--
-- The data-plane tables themselves (prompts, usage_hourly) are migrated in
-- every place by the second migration set, store/migrations/data.

-- +goose Up
ALTER TABLE organizations ADD COLUMN placement text NOT NULL DEFAULT 'shared'
    CONSTRAINT organizations_placement_check
    CHECK (placement IN ('shared', 'schema') OR placement ~ '^database:[a-z][a-z0-9_]{0,39}$');

-- +goose StatementBegin
CREATE FUNCTION prompts_apply_placed_retention(max_rows integer)
RETURNS TABLE (rows_deleted bigint, done boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp SET lock_timeout = '2s' AS $$
DECLARE
    default_days integer;
    budget bigint := least(greatest(max_rows, 1), 100000);
    o record;
    sch text;
    n bigint;
BEGIN
    IF NULLIF(current_setting('app.current_tenant_id', true), '') IS NOT NULL THEN
        RAISE EXCEPTION 'prompts_apply_placed_retention runs outside any tenant context'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('bulkhead.prompts_apply_placed_retention'));
    SELECT nullif(s.value, '')::integer INTO default_days FROM public.settings s WHERE s.name = 'retention_days';
    rows_deleted := 0;
    FOR o IN
        SELECT x.id, coalesce(x.retention_days, default_days, 0) AS days FROM public.organizations x
        WHERE x.placement = 'schema' AND coalesce(x.retention_days, default_days, 0) > 0
        ORDER BY x.id
    LOOP
        sch := 't_' || replace(o.id::text, '-', '');
        CONTINUE WHEN to_regclass(sch || '.prompts') IS NULL;
        EXECUTE format('DELETE FROM %I.prompts WHERE (organization_id, created_at, id) IN (
                SELECT organization_id, created_at, id FROM %I.prompts
                WHERE organization_id = $1 AND created_at < $2 LIMIT $3)', sch, sch)
            USING o.id, now() - make_interval(days => o.days), budget;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n > 0 THEN
            rows_deleted := rows_deleted + n;
            INSERT INTO public.audit_log (organization_id, actor, action, target, details)
            VALUES (o.id, 'retention', 'retention.delete', sch || '.prompts', jsonb_build_object('rows_deleted', n));
        END IF;
        budget := budget - n;
        EXIT WHEN budget <= 0;
    END LOOP;
    done := budget > 0;
    RETURN NEXT;
END
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION prompts_apply_placed_retention(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION prompts_apply_placed_retention(integer) TO bulkhead_app;

-- +goose Down
DROP FUNCTION IF EXISTS prompts_apply_placed_retention(integer);
ALTER TABLE organizations DROP COLUMN IF EXISTS placement;
