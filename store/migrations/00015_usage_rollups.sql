-- Hourly usage rollups, maintained with the writes.
--
-- /api/v1/usage summed the tenant's prompts rows: linear in the rows, 2.3 to
-- 3.7 s for 30 days of a 5M-row tenant (issue 17). usage_hourly holds one row
-- per organization, UTC hour, model and key (NULL: JWT callers), and the
-- report reads whole hours from it and only the partial hours at the ends of
-- its window from prompts (store.Usage).
--
-- Who writes it: a statement-level trigger on prompts, SECURITY DEFINER, from
-- the rows the statement inserted (its transition table) and nothing else.
-- So every insert counts, whatever wrote it (gateways of any version, the
-- replay of the journal and the spool, the owner's seed), a replayed row
-- that conflicted counts nothing (it is not in the transition table), and
-- the app role holds no grant on usage_hourly but SELECT: a gateway cannot
-- write usage that no request made. The trigger runs after
-- prompts_check_references (triggers fire in name order), which has already
-- refused rows of another organization than the tenant's.
--
-- Locks: the upsert locks each rollup row it touches until the transaction
-- ends; the writer's transactions hold many tenants, so two replicas could
-- deadlock if they touched two tenants' rows in opposite orders. The rows
-- are upserted in key order within a statement, and the writer orders its
-- tenants within a transaction (store/writer_insert.go), so every
-- transaction takes these locks in one global order.
--
-- What it keeps: rollups are usage records, not prompt text; retention
-- (00010) does not delete them. Deleting the organization does (cascade).
-- The rows stored before this migration are counted once, in this
-- migration's transaction: creating the trigger locks out inserts until it
-- commits, so no row is missed or counted twice (about 1 s per million rows
-- on the project's 2-core machine, during which the writers wait).

-- +goose Up
CREATE TABLE usage_hourly (
    organization_id   uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    hour              timestamptz NOT NULL,
    model             text NOT NULL,
    api_key_id        uuid,
    requests          bigint NOT NULL,
    errors            bigint NOT NULL,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    usage_tokens      bigint NOT NULL,
    latency_ms        bigint NOT NULL
);
-- The key of the upsert and of every report: a tenant's window in hour order.
CREATE UNIQUE INDEX usage_hourly_key ON usage_hourly (organization_id, hour, model, api_key_id) NULLS NOT DISTINCT;

ALTER TABLE usage_hourly ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_hourly
    USING (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid))
    WITH CHECK (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid));
REVOKE ALL ON usage_hourly FROM PUBLIC;
GRANT SELECT ON usage_hourly TO bulkhead_app;

-- +goose StatementBegin
CREATE FUNCTION prompts_rollup() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    INSERT INTO usage_hourly AS u (organization_id, hour, model, api_key_id, requests, errors,
                                   prompt_tokens, completion_tokens, usage_tokens, latency_ms)
    SELECT n.organization_id, date_trunc('hour', n.created_at, 'UTC'), n.model, n.api_key_id,
           count(*), count(*) FILTER (WHERE n.status >= 400),
           sum(n.prompt_tokens), sum(n.completion_tokens), sum(n.usage_tokens), sum(greatest(n.latency_ms, 0))
    FROM new_rows n
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (organization_id, hour, model, api_key_id) DO UPDATE SET
        requests = u.requests + excluded.requests,
        errors = u.errors + excluded.errors,
        prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = u.completion_tokens + excluded.completion_tokens,
        usage_tokens = u.usage_tokens + excluded.usage_tokens,
        latency_ms = u.latency_ms + excluded.latency_ms;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION prompts_rollup() FROM PUBLIC;

-- The trigger first, then the rows already there: its lock keeps inserts
-- out until this transaction commits.
CREATE TRIGGER prompts_rollup
    AFTER INSERT ON prompts REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION prompts_rollup();

INSERT INTO usage_hourly (organization_id, hour, model, api_key_id, requests, errors,
                          prompt_tokens, completion_tokens, usage_tokens, latency_ms)
SELECT organization_id, date_trunc('hour', created_at, 'UTC'), model, api_key_id,
       count(*), count(*) FILTER (WHERE status >= 400),
       sum(prompt_tokens), sum(completion_tokens), sum(usage_tokens), sum(greatest(latency_ms, 0))
FROM prompts
GROUP BY 1, 2, 3, 4;

-- +goose Down
DROP TRIGGER prompts_rollup ON prompts;
DROP FUNCTION prompts_rollup();
DROP TABLE usage_hourly;
