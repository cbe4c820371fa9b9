-- retention waits for an organization's row that a deletion, move or change holds, and fails the step past its lock timeout
-- tests: ./store TestMaintenanceWhileATenantGoes
CREATE OR REPLACE FUNCTION prompts_apply_retention(max_rows integer)
RETURNS TABLE (partitions_dropped integer, rows_deleted bigint, done boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp SET lock_timeout = '2s' AS $$
DECLARE
    default_days integer;
    budget bigint := least(greatest(max_rows, 1), 100000);
    part record;
    droppable boolean;
    o record;
    cutoff timestamptz;
    n bigint;
    dropped text[] := '{}';
    per_org jsonb := '{}';
BEGIN
    -- Maintenance, not a tenant's operation (THREATS 5).
    IF NULLIF(current_setting('app.current_tenant_id', true), '') IS NOT NULL THEN
        RAISE EXCEPTION 'prompts_apply_retention runs outside any tenant context'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('bulkhead.prompts_apply_retention'));
    SELECT nullif(s.value, '')::integer INTO default_days FROM settings s WHERE s.name = 'retention_days';
    partitions_dropped := 0;
    rows_deleted := 0;

    -- Whole partitions, oldest first, while every organization with a row
    -- in one keeps it for less time than has passed since its end. The
    -- legacy partition (everything before 00009) may stay while the days
    -- after it go.
    FOR part IN
        SELECT c.relname::text AS name,
               substring(pg_get_expr(c.relpartbound, c.oid) FROM $re$TO \('([^']+)'\)$re$)::timestamptz AS upper
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'public.prompts'::regclass AND c.relname <> 'prompts_default'
        ORDER BY 2
    LOOP
        EXIT WHEN part.upper > now();
        EXECUTE format($q$SELECT NOT EXISTS (
                SELECT FROM public.organizations o
                WHERE (coalesce(o.retention_days, $1, 0) = 0 OR $2 > now() - make_interval(days => coalesce(o.retention_days, $1)))
                  AND EXISTS (SELECT FROM public.%I p WHERE p.organization_id = o.id))$q$, part.name)
            INTO droppable USING default_days, part.upper;
        IF NOT droppable THEN
            CONTINUE WHEN part.name = 'prompts_legacy';
            EXIT;
        END IF;
        BEGIN
            EXECUTE format('DROP TABLE public.%I', part.name);
        EXCEPTION WHEN lock_not_available THEN
            EXIT; -- prompts is busy past lock_timeout: the next run
        END;
        dropped := dropped || part.name;
        partitions_dropped := partitions_dropped + 1;
    END LOOP;

    -- Rows, organization by organization, from where the last run stopped
    -- to the organization's cut-off.
    FOR o IN
        SELECT x.id, coalesce(x.retention_days, default_days, 0) AS days, x.retention_swept_until AS swept
        FROM organizations x
        WHERE coalesce(x.retention_days, default_days, 0) > 0
        ORDER BY x.retention_swept_until NULLS FIRST, x.id
    LOOP
        cutoff := now() - make_interval(days => o.days);
        CONTINUE WHEN o.swept IS NOT NULL AND o.swept >= cutoff;
        EXECUTE 'DELETE FROM public.prompts WHERE (organization_id, created_at, id) IN (
                SELECT organization_id, created_at, id FROM public.prompts
                WHERE organization_id = $1 AND created_at < $2 AND created_at >= coalesce($3, ''-infinity'')
                LIMIT $4)'
            USING o.id, cutoff, o.swept, budget;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n > 0 THEN
            rows_deleted := rows_deleted + n;
            per_org := per_org || jsonb_build_object(o.id::text, n);
        END IF;
        IF n < budget THEN -- swept up to the cut-off
            UPDATE organizations SET retention_swept_until = cutoff WHERE id = o.id;
        END IF;
        budget := budget - n;
        EXIT WHEN budget <= 0;
    END LOOP;
    done := budget > 0;

    IF partitions_dropped > 0 OR rows_deleted > 0 THEN
        INSERT INTO audit_log (organization_id, actor, action, target, details)
        VALUES (NULL, 'retention', 'retention.run', 'prompts', jsonb_build_object(
            'partitions_dropped', to_jsonb(dropped), 'rows_deleted', rows_deleted, 'default_days', default_days));
        INSERT INTO audit_log (organization_id, actor, action, target, details)
        SELECT e.key::uuid, 'retention', 'retention.delete', 'prompts', jsonb_build_object('rows_deleted', e.value::bigint)
        FROM jsonb_each_text(per_org) e;
    END IF;
    RETURN NEXT;
END
$$;
