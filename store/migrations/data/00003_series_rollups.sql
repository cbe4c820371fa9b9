-- The console's latency/status panel from the hourly rollups (issue 16), in
-- every place (placeholders as in 00001_baseline.sql).
--
-- The console's series (store.UsageSeries) summed the tenant's prompts rows
-- with percentile_disc over their latencies: 3.5 s for 30 days of a
-- 1M-row tenant, against issue 16's 50 ms. Percentiles cannot be summed,
-- but histograms can: usage_hourly gains a fixed-bucket latency histogram
-- (latency_histogram[i + 1] counts the rows of bucket i, i =
-- width_bucket(latency_ms, the bounds of usage_latency_histogram), so
-- bucket 0 is [0, 1) ms and bucket 30 is 300 s and above; the same bounds
-- are store/usage.go's latencyBounds, and TestUsageSeriesMatchesRows
-- fails if the two differ), and the count of 4xx answers beside errors
-- (status >= 400) so that 5xx = errors - client_errors. A day's p50 and
-- p95 are then read off the summed histogram, to its bucket.
--
-- prompts_rollup is 00002's with the two columns added to the first
-- upsert (marked "series").
--
-- Rows already rolled up get their two new columns from the prompts rows
-- still stored, in this migration's transaction, while inserts wait (the
-- lock below). Hours whose rows retention had already deleted keep an
-- empty histogram (their percentiles then come from the other hours of the
-- day, or are 0) and 0 client errors (their errors count as 5xx).

-- +goose Up
LOCK TABLE {{schema}}.prompts IN SHARE ROW EXCLUSIVE MODE;

ALTER TABLE {{schema}}.usage_hourly
    ADD COLUMN client_errors bigint NOT NULL DEFAULT 0,
    ADD COLUMN latency_histogram bigint[] NOT NULL DEFAULT '{}';

-- +goose StatementBegin
-- usage_latency_histogram: the counts per latency bucket of latencies (31
-- buckets; negative latencies count as 0 ms, as in latency_ms's sum).
CREATE FUNCTION {{schema}}.usage_latency_histogram(latencies integer[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT array_agg(coalesce(x.n, 0) ORDER BY i)
    FROM generate_series(0, 30) i
    LEFT JOIN (
        SELECT width_bucket(greatest(l, 0), '{1,2,3,5,7,10,15,20,30,50,70,100,150,200,300,500,700,1000,1500,2000,3000,5000,7000,10000,15000,20000,30000,60000,120000,300000}'::integer[]) AS b,
               count(*) AS n
        FROM unnest(latencies) l GROUP BY 1) x ON x.b = i
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION {{schema}}.usage_latency_histogram(integer[]) FROM PUBLIC;

-- +goose StatementBegin
-- usage_histogram_add: a + b element by element (an empty array is all 0).
CREATE FUNCTION {{schema}}.usage_histogram_add(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i) FROM unnest(a, b) WITH ORDINALITY t(x, y, i)
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION {{schema}}.usage_histogram_add(bigint[], bigint[]) FROM PUBLIC;

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION {{schema}}.prompts_rollup() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO {{schema}}.usage_hourly AS u (organization_id, hour, model, api_key_id, requests, errors,
                                   prompt_tokens, completion_tokens, usage_tokens, latency_ms,
                                   cost_micros, client_errors, latency_histogram) -- cost, series
    SELECT n.organization_id, date_trunc('hour', n.created_at, 'UTC'), n.model, n.api_key_id,
           count(*), count(*) FILTER (WHERE n.status >= 400),
           sum(n.prompt_tokens), sum(n.completion_tokens), sum(n.usage_tokens), sum(greatest(n.latency_ms, 0)),
           sum(n.cost_micros), -- cost
           count(*) FILTER (WHERE n.status BETWEEN 400 AND 499), {{schema}}.usage_latency_histogram(array_agg(n.latency_ms)) -- series
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
                           ELSE u.cost_micros + excluded.cost_micros END,
        client_errors = u.client_errors + excluded.client_errors, -- series
        latency_histogram = {{schema}}.usage_histogram_add(u.latency_histogram, excluded.latency_histogram); -- series

    -- end users (00002): the same rollup by end user, rows in key order
    -- for the lock order that 00015 of the main set explains.
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

UPDATE {{schema}}.usage_hourly u SET client_errors = p.client_errors, latency_histogram = p.latency_histogram
FROM (SELECT organization_id, date_trunc('hour', created_at, 'UTC') AS hour, model, api_key_id,
             count(*) FILTER (WHERE status BETWEEN 400 AND 499) AS client_errors,
             {{schema}}.usage_latency_histogram(array_agg(latency_ms)) AS latency_histogram
      FROM {{schema}}.prompts GROUP BY 1, 2, 3, 4) p
WHERE u.organization_id = p.organization_id AND u.hour = p.hour AND u.model = p.model
  AND u.api_key_id IS NOT DISTINCT FROM p.api_key_id;

-- +goose Down
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
DROP FUNCTION {{schema}}.usage_histogram_add(bigint[], bigint[]);
DROP FUNCTION {{schema}}.usage_latency_histogram(integer[]);
ALTER TABLE {{schema}}.usage_hourly DROP COLUMN latency_histogram, DROP COLUMN client_errors;
