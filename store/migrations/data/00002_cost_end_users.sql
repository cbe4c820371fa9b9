-- The cost of each request, its price snapshot and its end user (issue 15),
-- in every place (shared, tenant schemas, database targets; placeholders
-- as in 00001_baseline.sql).
--
--   * prompts: end_user (the JWT's user_id claim, else the body's "user";
--     at most 256 bytes, the gateway refuses longer ones), cost_micros and
--     the prices it was computed with (micro-USD per million tokens, the
--     catalog's prices in force when the request was made). All NULL for a
--     request to a model the catalog does not name, and for rows written
--     before this migration: they have no cost, not a zero one. Nullable
--     columns without a default change only the catalog (no rewrite of
--     the partitions); the ALTER's lock keeps the writers out until this
--     migration commits, so no row is counted by the old function after
--     the new one's backfill below.
--   * usage_hourly.cost_micros: the sum of the hour's priced rows; NULL
--     while none was priced.
--   * usage_hourly_user: the same hourly rollup by end user (NULL: rows
--     without one), apart from usage_hourly so that a tenant with many end
--     users does not multiply the rows every other report reads
--     (BenchmarkUsageFiveMillionRows). Same RLS and grants as usage_hourly;
--     like every data-plane table it has no foreign key to the control
--     plane (which may be in another database): deleting an organization
--     deletes its rows here explicitly (store.dataTables).
--
-- prompts_rollup is replaced with the same statement plus the cost column
-- (marked "cost") and a second upsert into usage_hourly_user (marked "end
-- users").

-- +goose Up
ALTER TABLE {{schema}}.prompts
    ADD COLUMN end_user text,
    ADD COLUMN cost_micros bigint,
    ADD COLUMN input_price_micros bigint,
    ADD COLUMN cached_input_price_micros bigint,
    ADD COLUMN output_price_micros bigint;

ALTER TABLE {{schema}}.usage_hourly ADD COLUMN cost_micros bigint;

CREATE TABLE {{schema}}.usage_hourly_user (
    organization_id   uuid NOT NULL,
    hour              timestamptz NOT NULL,
    end_user          text,
    requests          bigint NOT NULL,
    errors            bigint NOT NULL,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    usage_tokens      bigint NOT NULL,
    latency_ms        bigint NOT NULL,
    cost_micros       bigint
);
CREATE UNIQUE INDEX usage_hourly_user_key ON {{schema}}.usage_hourly_user (organization_id, hour, end_user) NULLS NOT DISTINCT;

ALTER TABLE {{schema}}.usage_hourly_user ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON {{schema}}.usage_hourly_user USING ({{isolation}}) WITH CHECK ({{isolation}});
REVOKE ALL ON {{schema}}.usage_hourly_user FROM PUBLIC;
GRANT SELECT ON {{schema}}.usage_hourly_user TO {{app}};

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION {{schema}}.prompts_rollup() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO {{schema}}.usage_hourly AS u (organization_id, hour, model, api_key_id, requests, errors,
                                   prompt_tokens, completion_tokens, usage_tokens, latency_ms,
                                   cost_micros) -- cost
    SELECT n.organization_id, date_trunc('hour', n.created_at, 'UTC'), n.model, n.api_key_id,
           count(*), count(*) FILTER (WHERE n.status >= 400),
           sum(n.prompt_tokens), sum(n.completion_tokens), sum(n.usage_tokens), sum(greatest(n.latency_ms, 0)),
           sum(n.cost_micros) -- cost
    FROM new_rows n
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (organization_id, hour, model, api_key_id) DO UPDATE SET
        requests = u.requests + excluded.requests,
        errors = u.errors + excluded.errors,
        prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = u.completion_tokens + excluded.completion_tokens,
        usage_tokens = u.usage_tokens + excluded.usage_tokens,
        latency_ms = u.latency_ms + excluded.latency_ms,
        -- cost (NULL: no priced row yet; NULL + x would lose x)
        cost_micros = CASE WHEN u.cost_micros IS NULL THEN excluded.cost_micros
                           WHEN excluded.cost_micros IS NULL THEN u.cost_micros
                           ELSE u.cost_micros + excluded.cost_micros END;

    -- end users. The same rollup by end user; rows in the same
    -- (organization, hour, end user) key order, for the lock order that
    -- 00015 of the main set explains.
    INSERT INTO {{schema}}.usage_hourly_user AS u (organization_id, hour, end_user, requests, errors,
                                        prompt_tokens, completion_tokens, usage_tokens, latency_ms, cost_micros)
    SELECT n.organization_id, date_trunc('hour', n.created_at, 'UTC'), n.end_user,
           count(*), count(*) FILTER (WHERE n.status >= 400),
           sum(n.prompt_tokens), sum(n.completion_tokens), sum(n.usage_tokens), sum(greatest(n.latency_ms, 0)),
           sum(n.cost_micros)
    FROM new_rows n
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (organization_id, hour, end_user) DO UPDATE SET
        requests = u.requests + excluded.requests,
        errors = u.errors + excluded.errors,
        prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = u.completion_tokens + excluded.completion_tokens,
        usage_tokens = u.usage_tokens + excluded.usage_tokens,
        latency_ms = u.latency_ms + excluded.latency_ms,
        cost_micros = CASE WHEN u.cost_micros IS NULL THEN excluded.cost_micros
                           WHEN excluded.cost_micros IS NULL THEN u.cost_micros
                           ELSE u.cost_micros + excluded.cost_micros END;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- The rows stored so far have no end user and no cost: one NULL-user group
-- per organization and hour, from the rollup itself (no scan of prompts).
INSERT INTO {{schema}}.usage_hourly_user (organization_id, hour, end_user, requests, errors,
                               prompt_tokens, completion_tokens, usage_tokens, latency_ms, cost_micros)
SELECT organization_id, hour, NULL, sum(requests), sum(errors), sum(prompt_tokens), sum(completion_tokens),
       sum(usage_tokens), sum(latency_ms), NULL
FROM {{schema}}.usage_hourly
GROUP BY organization_id, hour;

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION {{schema}}.prompts_rollup() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO {{schema}}.usage_hourly AS u (organization_id, hour, model, api_key_id, requests, errors,
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
DROP TABLE {{schema}}.usage_hourly_user;
ALTER TABLE {{schema}}.usage_hourly DROP COLUMN cost_micros;
ALTER TABLE {{schema}}.prompts
    DROP COLUMN output_price_micros,
    DROP COLUMN cached_input_price_micros,
    DROP COLUMN input_price_micros,
    DROP COLUMN cost_micros,
    DROP COLUMN end_user;
