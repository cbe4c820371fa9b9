-- retention of schema tenants deletes from a schema that an uncommitted deletion or move has dropped, waiting for it
-- tests: ./store TestMaintenanceWhileATenantGoes
CREATE OR REPLACE FUNCTION prompts_apply_placed_retention(max_rows integer)
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
