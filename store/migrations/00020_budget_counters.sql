-- CONTROL PLANE: budget counters in PostgreSQL (issue 15).
--
-- The gateway's dollar budgets are counted in a shared counter per budget
-- that replicas lease dollars from (gateway/budget/lease.go). Redis holds
-- those counters when it is configured and reachable; budget_counters
-- holds them when Redis is not configured, and while it is unreachable.
-- One row per budget, the same state as the Redis hash: a generation (a
-- random number chosen when the counter was built from the request log's
-- costs), and parallel arrays of window buckets and their spend in
-- micro-USD, leases and reservations in flight included. A row past
-- expires_at counts as missing: it is rebuilt from the request log.
--
-- The app role writes it inside the tenant's transaction (forced RLS by
-- organization, like every tenant table); budget_counter_lease is
-- SECURITY INVOKER, one round trip for what Redis's lease script does, so
-- RLS applies to it as to the app role's own statements. A row names a
-- budget of its own organization (composite key), and goes with it.

-- +goose Up
CREATE TABLE budget_counters (
    organization_id uuid NOT NULL,
    budget_id       uuid NOT NULL,
    generation      bigint NOT NULL,
    buckets         bigint[] NOT NULL,
    spends          bigint[] NOT NULL CHECK (cardinality(spends) = cardinality(buckets)),
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (organization_id, budget_id),
    FOREIGN KEY (organization_id, budget_id) REFERENCES budgets (organization_id, id) ON DELETE CASCADE
);

ALTER TABLE budget_counters ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON budget_counters
    USING (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid))
    WITH CHECK (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid));

REVOKE ALL ON budget_counters FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON budget_counters TO bulkhead_app;

-- budget_counter_lease reserves p_amount from the counters of p_ids (all
-- of p_org's), all or nothing, and leases the caller a chunk beyond it:
-- the same decision and reply as gateway/budget/lua.go's leaseScript, whose
-- comment describes the arguments (here one array per argument, one element
-- per budget). The rows are locked in budget order, so that replicas leasing
-- overlapping budgets never deadlock.
-- +goose StatementBegin
CREATE FUNCTION budget_counter_lease(p_org uuid, p_amount bigint, p_div bigint, p_ids uuid[], p_limits bigint[],
    p_lows bigint[], p_buckets bigint[], p_ttl_ms bigint[], p_most bigint[],
    p_back_buckets bigint[], p_backs bigint[], p_back_gens bigint[])
RETURNS bigint[] LANGUAGE plpgsql SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    n int := cardinality(p_ids);
    missing bigint[] := '{-1}';
    locked uuid[];
    spent bigint[] := '{}';
    gens bigint[] := '{}';
    refused int := 0;
    r budget_counters;
    bs bigint[];
    ss bigint[];
    s bigint;
    v bigint;
    extra bigint;
    out bigint[] := '{1}';
BEGIN
    -- Lock the live counters and learn which are missing in one
    -- statement: FOR UPDATE locks only rows its snapshot sees, so a counter
    -- built after it started is reported missing (the caller builds, a
    -- no-op, and asks again) rather than read and written unlocked, which
    -- would overwrite a concurrent lease's spend.
    SELECT coalesce(array_agg(l.budget_id), '{}') INTO locked FROM (SELECT budget_id FROM budget_counters
        WHERE organization_id = p_org AND budget_id = ANY (p_ids) AND expires_at > now()
        ORDER BY budget_id FOR UPDATE) l;
    FOR i IN 1..n LOOP
        IF NOT p_ids[i] = ANY (locked) THEN
            missing := missing || i::bigint;
        END IF;
    END LOOP;
    IF cardinality(missing) > 1 THEN
        RETURN missing;
    END IF;
    FOR i IN 1..n LOOP
        SELECT * INTO r FROM budget_counters WHERE organization_id = p_org AND budget_id = p_ids[i];
        bs := '{}';
        ss := '{}';
        s := 0;
        FOR j IN 1..cardinality(r.buckets) LOOP
            IF r.buckets[j] >= p_lows[i] THEN
                v := r.spends[j];
                IF p_backs[i] > 0 AND r.generation = p_back_gens[i] AND r.buckets[j] = p_back_buckets[i] THEN
                    v := v - p_backs[i];
                END IF;
                bs := bs || r.buckets[j];
                ss := ss || v;
                s := s + v;
            END IF;
        END LOOP;
        UPDATE budget_counters SET buckets = bs, spends = ss
            WHERE organization_id = p_org AND budget_id = p_ids[i];
        spent := spent || s;
        gens := gens || r.generation;
        IF refused = 0 AND (s >= p_limits[i] OR s + p_amount > p_limits[i]) THEN
            refused := i;
        END IF;
    END LOOP;
    IF refused > 0 THEN
        RETURN '{0}'::bigint[] || spent || refused::bigint;
    END IF;
    FOR i IN 1..n LOOP
        extra := least(greatest((p_limits[i] - spent[i] - p_amount) / p_div, 0), p_most[i]);
        UPDATE budget_counters SET
            spends = CASE WHEN p_buckets[i] = ANY (buckets)
                THEN (SELECT array_agg(CASE WHEN u.b = p_buckets[i] THEN u.sp + p_amount + extra ELSE u.sp END ORDER BY u.o)
                      FROM unnest(buckets, spends) WITH ORDINALITY AS u (b, sp, o))
                ELSE spends || (p_amount + extra) END,
            buckets = CASE WHEN p_buckets[i] = ANY (buckets) THEN buckets ELSE buckets || p_buckets[i] END,
            expires_at = now() + p_ttl_ms[i] * interval '1 millisecond'
            WHERE organization_id = p_org AND budget_id = p_ids[i];
        out := out || (spent[i] + p_amount + extra) || extra || gens[i];
    END LOOP;
    RETURN out;
END
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION budget_counter_lease(uuid, bigint, bigint, uuid[], bigint[], bigint[], bigint[], bigint[], bigint[],
    bigint[], bigint[], bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION budget_counter_lease(uuid, bigint, bigint, uuid[], bigint[], bigint[], bigint[], bigint[], bigint[],
    bigint[], bigint[], bigint[]) TO bulkhead_app;

-- +goose Down
DROP FUNCTION budget_counter_lease(uuid, bigint, bigint, uuid[], bigint[], bigint[], bigint[], bigint[], bigint[],
    bigint[], bigint[], bigint[]);
DROP TABLE budget_counters;
