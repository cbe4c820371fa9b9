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
-- A day of hourly rollups is still 24 rows per model and key, and
-- summing 31 histogram buckets over 30 days of them cost 30 to 140 ms on
-- the 2-core machine: usage_daily holds the same sums per UTC day (cost
-- included), kept by the same trigger, and a report reads whole days from
-- it, the whole hours at either end from usage_hourly and the partial
-- hours from prompts (store.hourlyUnion).
--
-- prompts_rollup is 00002's with the histogram and the 4xx count added to
-- the first upsert (marked "series"), counted and merged inline (no
-- function call: the writer's statements often hold one or two rows per
-- tenant, and a SQL function is planned again for each; calling them cut
-- the writer to a third at 10,000 tenants), and a third upsert, into
-- usage_daily, which carries the cost too.
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

-- usage_daily: usage_hourly's sums per UTC day (day: its midnight), with
-- the same key, policy and grants; the trigger writes it in the same
-- statement, after usage_hourly (a global lock order: see 00015 of the
-- main set).
CREATE TABLE {{schema}}.usage_daily (LIKE {{schema}}.usage_hourly INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE {{schema}}.usage_daily RENAME COLUMN hour TO day;
CREATE UNIQUE INDEX usage_daily_key ON {{schema}}.usage_daily (organization_id, day, model, api_key_id) NULLS NOT DISTINCT;
ALTER TABLE {{schema}}.usage_daily ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON {{schema}}.usage_daily USING ({{isolation}}) WITH CHECK ({{isolation}});
REVOKE ALL ON {{schema}}.usage_daily FROM PUBLIC;
GRANT SELECT ON {{schema}}.usage_daily TO {{app}};

-- +goose StatementBegin
-- usage_latency_histogram: the counts per latency bucket of latencies, for
-- the backfill below (the trigger counts inline); negative latencies count
-- as 0 ms, as in latency_ms's sum.
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
-- usage_histogram_sum: the element-wise sum of histograms (the backfill
-- of usage_daily below).
CREATE AGGREGATE {{schema}}.usage_histogram_sum(bigint[]) (SFUNC = {{schema}}.usage_histogram_add, STYPE = bigint[], INITCOND = '{}');
REVOKE ALL ON FUNCTION {{schema}}.usage_histogram_sum(bigint[]) FROM PUBLIC;

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION {{schema}}.prompts_rollup() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- series: the histogram is counted and merged inline (no function call:
    -- the writer's statements often hold one or two rows per tenant, and
    -- a SQL function is planned again for each).
    INSERT INTO {{schema}}.usage_hourly AS u (organization_id, hour, model, api_key_id, requests, errors,
                                   prompt_tokens, completion_tokens, usage_tokens, latency_ms,
                                   cost_micros, client_errors, latency_histogram) -- cost, 00018
    SELECT n.organization_id, date_trunc('hour', n.created_at, 'UTC'), n.model, n.api_key_id,
           count(*), count(*) FILTER (WHERE n.status >= 400),
           sum(n.prompt_tokens), sum(n.completion_tokens), sum(n.usage_tokens), sum(greatest(n.latency_ms, 0)),
           sum(n.cost_micros), -- cost
           count(*) FILTER (WHERE n.status BETWEEN 400 AND 499), -- series, and the histogram:
           ARRAY[count(*) FILTER (WHERE n.b = 0), count(*) FILTER (WHERE n.b = 1), count(*) FILTER (WHERE n.b = 2),
                 count(*) FILTER (WHERE n.b = 3), count(*) FILTER (WHERE n.b = 4),
                 count(*) FILTER (WHERE n.b = 5), count(*) FILTER (WHERE n.b = 6),
                 count(*) FILTER (WHERE n.b = 7), count(*) FILTER (WHERE n.b = 8),
                 count(*) FILTER (WHERE n.b = 9), count(*) FILTER (WHERE n.b = 10),
                 count(*) FILTER (WHERE n.b = 11), count(*) FILTER (WHERE n.b = 12),
                 count(*) FILTER (WHERE n.b = 13), count(*) FILTER (WHERE n.b = 14),
                 count(*) FILTER (WHERE n.b = 15), count(*) FILTER (WHERE n.b = 16),
                 count(*) FILTER (WHERE n.b = 17), count(*) FILTER (WHERE n.b = 18),
                 count(*) FILTER (WHERE n.b = 19), count(*) FILTER (WHERE n.b = 20),
                 count(*) FILTER (WHERE n.b = 21), count(*) FILTER (WHERE n.b = 22),
                 count(*) FILTER (WHERE n.b = 23), count(*) FILTER (WHERE n.b = 24),
                 count(*) FILTER (WHERE n.b = 25), count(*) FILTER (WHERE n.b = 26),
                 count(*) FILTER (WHERE n.b = 27), count(*) FILTER (WHERE n.b = 28),
                 count(*) FILTER (WHERE n.b = 29), count(*) FILTER (WHERE n.b = 30)]
    FROM (SELECT *, width_bucket(greatest(latency_ms, 0), '{1,2,3,5,7,10,15,20,30,50,70,100,150,200,300,500,700,1000,1500,2000,3000,5000,7000,10000,15000,20000,30000,60000,120000,300000}'::integer[]) AS b FROM new_rows) n -- series: b
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (organization_id, hour, model, api_key_id) DO UPDATE SET
        requests = u.requests + excluded.requests,
        errors = u.errors + excluded.errors,
        prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = u.completion_tokens + excluded.completion_tokens,
        usage_tokens = u.usage_tokens + excluded.usage_tokens,
        latency_ms = u.latency_ms + excluded.latency_ms,
        cost_micros = CASE WHEN u.cost_micros IS NULL THEN excluded.cost_micros -- cost (NULL + x would lose x)
                           WHEN excluded.cost_micros IS NULL THEN u.cost_micros
                           ELSE u.cost_micros + excluded.cost_micros END,
        client_errors = u.client_errors + excluded.client_errors, -- series
        latency_histogram = (SELECT array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i)
                             FROM unnest(u.latency_histogram, excluded.latency_histogram) WITH ORDINALITY t(x, y, i)); -- series
    -- series: the same sums per day.
    INSERT INTO {{schema}}.usage_daily AS u (organization_id, day, model, api_key_id, requests, errors,
                                  prompt_tokens, completion_tokens, usage_tokens, latency_ms,
                                  cost_micros, client_errors, latency_histogram)
    SELECT n.organization_id, date_trunc('day', n.created_at, 'UTC'), n.model, n.api_key_id,
           count(*), count(*) FILTER (WHERE n.status >= 400),
           sum(n.prompt_tokens), sum(n.completion_tokens), sum(n.usage_tokens), sum(greatest(n.latency_ms, 0)),
           sum(n.cost_micros), -- cost
           count(*) FILTER (WHERE n.status BETWEEN 400 AND 499),
           ARRAY[count(*) FILTER (WHERE n.b = 0), count(*) FILTER (WHERE n.b = 1), count(*) FILTER (WHERE n.b = 2),
                 count(*) FILTER (WHERE n.b = 3), count(*) FILTER (WHERE n.b = 4),
                 count(*) FILTER (WHERE n.b = 5), count(*) FILTER (WHERE n.b = 6),
                 count(*) FILTER (WHERE n.b = 7), count(*) FILTER (WHERE n.b = 8),
                 count(*) FILTER (WHERE n.b = 9), count(*) FILTER (WHERE n.b = 10),
                 count(*) FILTER (WHERE n.b = 11), count(*) FILTER (WHERE n.b = 12),
                 count(*) FILTER (WHERE n.b = 13), count(*) FILTER (WHERE n.b = 14),
                 count(*) FILTER (WHERE n.b = 15), count(*) FILTER (WHERE n.b = 16),
                 count(*) FILTER (WHERE n.b = 17), count(*) FILTER (WHERE n.b = 18),
                 count(*) FILTER (WHERE n.b = 19), count(*) FILTER (WHERE n.b = 20),
                 count(*) FILTER (WHERE n.b = 21), count(*) FILTER (WHERE n.b = 22),
                 count(*) FILTER (WHERE n.b = 23), count(*) FILTER (WHERE n.b = 24),
                 count(*) FILTER (WHERE n.b = 25), count(*) FILTER (WHERE n.b = 26),
                 count(*) FILTER (WHERE n.b = 27), count(*) FILTER (WHERE n.b = 28),
                 count(*) FILTER (WHERE n.b = 29), count(*) FILTER (WHERE n.b = 30)]
    FROM (SELECT *, width_bucket(greatest(latency_ms, 0), '{1,2,3,5,7,10,15,20,30,50,70,100,150,200,300,500,700,1000,1500,2000,3000,5000,7000,10000,15000,20000,30000,60000,120000,300000}'::integer[]) AS b FROM new_rows) n
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (organization_id, day, model, api_key_id) DO UPDATE SET
        requests = u.requests + excluded.requests,
        errors = u.errors + excluded.errors,
        prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = u.completion_tokens + excluded.completion_tokens,
        usage_tokens = u.usage_tokens + excluded.usage_tokens,
        latency_ms = u.latency_ms + excluded.latency_ms,
        cost_micros = CASE WHEN u.cost_micros IS NULL THEN excluded.cost_micros -- cost (NULL + x would lose x)
                           WHEN excluded.cost_micros IS NULL THEN u.cost_micros
                           ELSE u.cost_micros + excluded.cost_micros END,
        client_errors = u.client_errors + excluded.client_errors,
        latency_histogram = (SELECT array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i)
                             FROM unnest(u.latency_histogram, excluded.latency_histogram) WITH ORDINALITY t(x, y, i));
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

-- The days so far, from the hours (which outlive retention's deletions).
INSERT INTO {{schema}}.usage_daily (organization_id, day, model, api_key_id, requests, errors, prompt_tokens,
                         completion_tokens, usage_tokens, latency_ms, cost_micros, client_errors, latency_histogram)
SELECT organization_id, date_trunc('day', hour, 'UTC'), model, api_key_id, sum(requests), sum(errors), sum(prompt_tokens),
       sum(completion_tokens), sum(usage_tokens), sum(latency_ms), sum(cost_micros), sum(client_errors),
       {{schema}}.usage_histogram_sum(latency_histogram)
FROM {{schema}}.usage_hourly GROUP BY 1, 2, 3, 4;

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
DROP TABLE {{schema}}.usage_daily;
DROP AGGREGATE {{schema}}.usage_histogram_sum(bigint[]);
DROP FUNCTION {{schema}}.usage_histogram_add(bigint[], bigint[]);
DROP FUNCTION {{schema}}.usage_latency_histogram(integer[]);
ALTER TABLE {{schema}}.usage_hourly DROP COLUMN latency_histogram, DROP COLUMN client_errors;
