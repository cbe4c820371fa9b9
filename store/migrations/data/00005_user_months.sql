-- The end users' report over a month in a few rows per user (issue 17),
-- in every place (placeholders as in 00001_baseline.sql).
--
-- A 30-day report by end user read one usage_daily_user row per user and
-- day and one usage_hourly_user row per user and hour of the partial days
-- at either end: 52,000 rows for a tenant with 1,000 active end users
-- (BenchmarkUsageFiveMillionRows: p50 39 ms, p99 52 ms, where the other
-- groupings read ~1,000 rollup rows in 8-12 ms p99). So, cumulative sums:
--
--   * usage_daily_user gains cum_* arrays: cum_x[k + 1] is the user's x
--     in the hours of the day before hour k (k = 0 to 24), so that any
--     run of hours [a, b) of a day is cum_x[b + 1] - cum_x[a + 1]: one
--     row per user for the partial day at the start of a window. The
--     counts' arrays hold 0 where nothing came before; the cost's, NULL
--     while nothing was priced.
--   * usage_monthly_user (new) is the same by day within a UTC month:
--     cum_x[k + 1] sums the days of the month before day k + 1 (k = 0 to
--     31): the whole days of a 30-day window are one or two rows per user.
--   * usage_rollup_state.user_through (hour-aligned, never before
--     daily_through): usage_daily_user holds each end user's hours before
--     it, the day under way included, so the partial day at the end of a
--     window is one row per user too, and the hours from it on are read
--     from usage_hourly_user (one or two, with the writer's hourly round).
--     usage_roll_days adds the hours over (by five minutes) to the days
--     under the same lock as before, then sums the months of the days
--     over again from the days.
--   * A row of an hour already rolled up (a replay, a clock behind) is
--     added by the trigger, as 00004 adds late rows to the days: its hour
--     to the day's arrays, and its day to the month's if that day is
--     before daily_through. Adding an hour j to a day changes cum_x[k + 1]
--     for k > j only: a report that read where the days end before a roll
--     and the rows after it still reads each row once (store.Usage reads
--     user_through and daily_through first, then the rollups).
--
-- A report by end user then reads at most 2 month rows, 2 day rows and
-- the hours after user_through per user.

-- +goose Up
LOCK TABLE {{schema}}.prompts IN SHARE ROW EXCLUSIVE MODE;

ALTER TABLE {{schema}}.usage_rollup_state ADD COLUMN user_through timestamptz;
UPDATE {{schema}}.usage_rollup_state SET user_through = daily_through;
ALTER TABLE {{schema}}.usage_rollup_state ALTER COLUMN user_through SET NOT NULL,
    ADD CONSTRAINT usage_rollup_state_user_through CHECK (user_through >= daily_through);

ALTER TABLE {{schema}}.usage_daily_user ADD COLUMN cum_requests bigint[], ADD COLUMN cum_prompt_tokens bigint[],
    ADD COLUMN cum_completion_tokens bigint[], ADD COLUMN cum_usage_tokens bigint[], ADD COLUMN cum_cost_micros bigint[];

CREATE TABLE {{schema}}.usage_monthly_user (LIKE {{schema}}.usage_daily_user INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE {{schema}}.usage_monthly_user RENAME COLUMN day TO month;
CREATE UNIQUE INDEX usage_monthly_user_key ON {{schema}}.usage_monthly_user (organization_id, month, end_user);
ALTER TABLE {{schema}}.usage_monthly_user ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON {{schema}}.usage_monthly_user USING ({{isolation}}) WITH CHECK ({{isolation}});
REVOKE ALL ON {{schema}}.usage_monthly_user FROM PUBLIC;
GRANT SELECT ON {{schema}}.usage_monthly_user TO {{app}};

-- +goose StatementBegin
-- usage_cum_add: a + b element by element, NULL being nothing (a cost
-- array's "nothing priced yet").
CREATE FUNCTION {{schema}}.usage_cum_add(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT array_agg(CASE WHEN x IS NULL THEN y WHEN y IS NULL THEN x ELSE x + y END ORDER BY i)
    FROM unnest(a, b) WITH ORDINALITY t(x, y, i)
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION {{schema}}.usage_cum_add(bigint[], bigint[]) FROM PUBLIC;

-- The days before daily_through again, with their arrays, from the hours
-- (which hold every row: retention deletes rows, not rollups), and the
-- months from them.
DELETE FROM {{schema}}.usage_daily_user;
INSERT INTO {{schema}}.usage_daily_user AS u (organization_id, day, end_user, requests, errors, prompt_tokens, completion_tokens, usage_tokens,
        latency_ms, cost_micros, cum_requests, cum_prompt_tokens, cum_completion_tokens, cum_usage_tokens, cum_cost_micros)
    SELECT organization_id, p, end_user, max(requests), max(errors), max(prompt_tokens), max(completion_tokens), max(usage_tokens),
           max(latency_ms), max(cost_micros), array_agg(cr ORDER BY k)::bigint[], array_agg(cp ORDER BY k)::bigint[],
           array_agg(cc ORDER BY k)::bigint[], array_agg(cu ORDER BY k)::bigint[], array_agg(cm ORDER BY k)::bigint[]
    FROM (SELECT organization_id, p, end_user, k, sum(requests) AS requests, sum(errors) AS errors, sum(prompt_tokens) AS prompt_tokens,
                 sum(completion_tokens) AS completion_tokens, sum(usage_tokens) AS usage_tokens, sum(latency_ms) AS latency_ms,
                 sum(cost_micros) AS cost_micros, coalesce(sum(requests) FILTER (WHERE j < k), 0) AS cr,
                 coalesce(sum(prompt_tokens) FILTER (WHERE j < k), 0) AS cp, coalesce(sum(completion_tokens) FILTER (WHERE j < k), 0) AS cc,
                 coalesce(sum(usage_tokens) FILTER (WHERE j < k), 0) AS cu, sum(cost_micros) FILTER (WHERE j < k) AS cm
          FROM (SELECT organization_id, date_trunc('day', hour, 'UTC') AS p, end_user, extract(hour FROM hour AT TIME ZONE 'UTC')::integer AS j,
                        requests, errors, prompt_tokens, completion_tokens, usage_tokens, latency_ms, cost_micros
                FROM {{schema}}.usage_hourly_user WHERE hour < (SELECT daily_through FROM {{schema}}.usage_rollup_state)) s
          CROSS JOIN generate_series(0, 24) k GROUP BY 1, 2, 3, 4) c
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
INSERT INTO {{schema}}.usage_monthly_user AS u (organization_id, month, end_user, requests, errors, prompt_tokens, completion_tokens, usage_tokens,
        latency_ms, cost_micros, cum_requests, cum_prompt_tokens, cum_completion_tokens, cum_usage_tokens, cum_cost_micros)
    SELECT organization_id, p, end_user, max(requests), max(errors), max(prompt_tokens), max(completion_tokens), max(usage_tokens),
           max(latency_ms), max(cost_micros), array_agg(cr ORDER BY k)::bigint[], array_agg(cp ORDER BY k)::bigint[],
           array_agg(cc ORDER BY k)::bigint[], array_agg(cu ORDER BY k)::bigint[], array_agg(cm ORDER BY k)::bigint[]
    FROM (SELECT organization_id, p, end_user, k, sum(requests) AS requests, sum(errors) AS errors, sum(prompt_tokens) AS prompt_tokens,
                 sum(completion_tokens) AS completion_tokens, sum(usage_tokens) AS usage_tokens, sum(latency_ms) AS latency_ms,
                 sum(cost_micros) AS cost_micros, coalesce(sum(requests) FILTER (WHERE j < k), 0) AS cr,
                 coalesce(sum(prompt_tokens) FILTER (WHERE j < k), 0) AS cp, coalesce(sum(completion_tokens) FILTER (WHERE j < k), 0) AS cc,
                 coalesce(sum(usage_tokens) FILTER (WHERE j < k), 0) AS cu, sum(cost_micros) FILTER (WHERE j < k) AS cm
          FROM (SELECT organization_id, date_trunc('month', day, 'UTC') AS p, end_user, extract(day FROM day AT TIME ZONE 'UTC')::integer - 1 AS j,
                        requests, errors, prompt_tokens, completion_tokens, usage_tokens, latency_ms, cost_micros
                FROM {{schema}}.usage_daily_user WHERE day < (SELECT daily_through FROM {{schema}}.usage_rollup_state)) s
          CROSS JOIN generate_series(0, 31) k GROUP BY 1, 2, 3, 4) c
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION {{schema}}.prompts_rollup() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    users    boolean;     -- a row has an end user
    oldest   timestamptz; -- the oldest row
    through  timestamptz; -- usage_rollup_state's, read after the upsert into usage_hourly
    uthrough timestamptz; -- and its user_through (00005)
BEGIN
    -- The histogram is counted and merged inline (00003).
    INSERT INTO {{schema}}.usage_hourly AS u (organization_id, hour, model, api_key_id, requests, errors,
                                   prompt_tokens, completion_tokens, usage_tokens, latency_ms,
                                   cost_micros, client_errors, latency_histogram)
    SELECT n.organization_id, date_trunc('hour', n.created_at, 'UTC'), n.model, n.api_key_id,
           count(*), count(*) FILTER (WHERE n.status >= 400),
           sum(n.prompt_tokens), sum(n.completion_tokens), sum(n.usage_tokens), sum(greatest(n.latency_ms, 0)),
           sum(n.cost_micros), count(*) FILTER (WHERE n.status BETWEEN 400 AND 499),
           ARRAY[count(*) FILTER (WHERE n.b = 0), count(*) FILTER (WHERE n.b = 1), count(*) FILTER (WHERE n.b = 2),
                 count(*) FILTER (WHERE n.b = 3), count(*) FILTER (WHERE n.b = 4), count(*) FILTER (WHERE n.b = 5),
                 count(*) FILTER (WHERE n.b = 6), count(*) FILTER (WHERE n.b = 7), count(*) FILTER (WHERE n.b = 8),
                 count(*) FILTER (WHERE n.b = 9), count(*) FILTER (WHERE n.b = 10), count(*) FILTER (WHERE n.b = 11),
                 count(*) FILTER (WHERE n.b = 12), count(*) FILTER (WHERE n.b = 13), count(*) FILTER (WHERE n.b = 14),
                 count(*) FILTER (WHERE n.b = 15), count(*) FILTER (WHERE n.b = 16), count(*) FILTER (WHERE n.b = 17),
                 count(*) FILTER (WHERE n.b = 18), count(*) FILTER (WHERE n.b = 19), count(*) FILTER (WHERE n.b = 20),
                 count(*) FILTER (WHERE n.b = 21), count(*) FILTER (WHERE n.b = 22), count(*) FILTER (WHERE n.b = 23),
                 count(*) FILTER (WHERE n.b = 24), count(*) FILTER (WHERE n.b = 25), count(*) FILTER (WHERE n.b = 26),
                 count(*) FILTER (WHERE n.b = 27), count(*) FILTER (WHERE n.b = 28), count(*) FILTER (WHERE n.b = 29),
                 count(*) FILTER (WHERE n.b = 30)]
    FROM (SELECT *, width_bucket(greatest(latency_ms, 0), '{1,2,3,5,7,10,15,20,30,50,70,100,150,200,300,500,700,1000,1500,2000,3000,5000,7000,10000,15000,20000,30000,60000,120000,300000}'::integer[]) AS b FROM new_rows) n
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (organization_id, hour, model, api_key_id) DO UPDATE SET
        requests = u.requests + excluded.requests,
        errors = u.errors + excluded.errors,
        prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = u.completion_tokens + excluded.completion_tokens,
        usage_tokens = u.usage_tokens + excluded.usage_tokens,
        latency_ms = u.latency_ms + excluded.latency_ms,
        cost_micros = CASE WHEN u.cost_micros IS NULL THEN excluded.cost_micros -- NULL + x would lose x
                           WHEN excluded.cost_micros IS NULL THEN u.cost_micros
                           ELSE u.cost_micros + excluded.cost_micros END,
        client_errors = u.client_errors + excluded.client_errors,
        latency_histogram = (SELECT array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i)
                             FROM unnest(u.latency_histogram, excluded.latency_histogram) WITH ORDINALITY t(x, y, i));
    SELECT bool_or(n.end_user IS NOT NULL), min(n.created_at), (SELECT s.daily_through FROM {{schema}}.usage_rollup_state s),
           (SELECT s.user_through FROM {{schema}}.usage_rollup_state s)
      INTO users, oldest, through, uthrough FROM new_rows n;
    IF users THEN
        INSERT INTO {{schema}}.usage_hourly_user AS u (organization_id, hour, end_user, requests, errors,
                                        prompt_tokens, completion_tokens, usage_tokens, latency_ms, cost_micros)
    SELECT n.organization_id, date_trunc('hour', n.created_at, 'UTC'), n.end_user,
           count(*), count(*) FILTER (WHERE n.status >= 400),
           sum(n.prompt_tokens), sum(n.completion_tokens), sum(n.usage_tokens), sum(greatest(n.latency_ms, 0)),
           sum(n.cost_micros)
    FROM new_rows n
    WHERE n.end_user IS NOT NULL
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (organization_id, hour, end_user) DO UPDATE SET
        requests = u.requests + excluded.requests,
        errors = u.errors + excluded.errors,
        prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = u.completion_tokens + excluded.completion_tokens,
        usage_tokens = u.usage_tokens + excluded.usage_tokens,
        latency_ms = u.latency_ms + excluded.latency_ms,
        cost_micros = CASE WHEN u.cost_micros IS NULL THEN excluded.cost_micros -- NULL + x would lose x
                           WHEN excluded.cost_micros IS NULL THEN u.cost_micros
                           ELSE u.cost_micros + excluded.cost_micros END;
    END IF;
    IF oldest < through THEN -- rows of days already rolled up
        INSERT INTO {{schema}}.usage_daily AS u (organization_id, day, model, api_key_id, requests, errors,
                                   prompt_tokens, completion_tokens, usage_tokens, latency_ms,
                                   cost_micros, client_errors, latency_histogram)
    SELECT n.organization_id, date_trunc('day', n.created_at, 'UTC'), n.model, n.api_key_id,
           count(*), count(*) FILTER (WHERE n.status >= 400),
           sum(n.prompt_tokens), sum(n.completion_tokens), sum(n.usage_tokens), sum(greatest(n.latency_ms, 0)),
           sum(n.cost_micros), count(*) FILTER (WHERE n.status BETWEEN 400 AND 499),
           ARRAY[count(*) FILTER (WHERE n.b = 0), count(*) FILTER (WHERE n.b = 1), count(*) FILTER (WHERE n.b = 2),
                 count(*) FILTER (WHERE n.b = 3), count(*) FILTER (WHERE n.b = 4), count(*) FILTER (WHERE n.b = 5),
                 count(*) FILTER (WHERE n.b = 6), count(*) FILTER (WHERE n.b = 7), count(*) FILTER (WHERE n.b = 8),
                 count(*) FILTER (WHERE n.b = 9), count(*) FILTER (WHERE n.b = 10), count(*) FILTER (WHERE n.b = 11),
                 count(*) FILTER (WHERE n.b = 12), count(*) FILTER (WHERE n.b = 13), count(*) FILTER (WHERE n.b = 14),
                 count(*) FILTER (WHERE n.b = 15), count(*) FILTER (WHERE n.b = 16), count(*) FILTER (WHERE n.b = 17),
                 count(*) FILTER (WHERE n.b = 18), count(*) FILTER (WHERE n.b = 19), count(*) FILTER (WHERE n.b = 20),
                 count(*) FILTER (WHERE n.b = 21), count(*) FILTER (WHERE n.b = 22), count(*) FILTER (WHERE n.b = 23),
                 count(*) FILTER (WHERE n.b = 24), count(*) FILTER (WHERE n.b = 25), count(*) FILTER (WHERE n.b = 26),
                 count(*) FILTER (WHERE n.b = 27), count(*) FILTER (WHERE n.b = 28), count(*) FILTER (WHERE n.b = 29),
                 count(*) FILTER (WHERE n.b = 30)]
    FROM (SELECT *, width_bucket(greatest(latency_ms, 0), '{1,2,3,5,7,10,15,20,30,50,70,100,150,200,300,500,700,1000,1500,2000,3000,5000,7000,10000,15000,20000,30000,60000,120000,300000}'::integer[]) AS b FROM new_rows WHERE created_at < through) n
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (organization_id, day, model, api_key_id) DO UPDATE SET
        requests = u.requests + excluded.requests,
        errors = u.errors + excluded.errors,
        prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = u.completion_tokens + excluded.completion_tokens,
        usage_tokens = u.usage_tokens + excluded.usage_tokens,
        latency_ms = u.latency_ms + excluded.latency_ms,
        cost_micros = CASE WHEN u.cost_micros IS NULL THEN excluded.cost_micros -- NULL + x would lose x
                           WHEN excluded.cost_micros IS NULL THEN u.cost_micros
                           ELSE u.cost_micros + excluded.cost_micros END,
        client_errors = u.client_errors + excluded.client_errors,
        latency_histogram = (SELECT array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i)
                             FROM unnest(u.latency_histogram, excluded.latency_histogram) WITH ORDINALITY t(x, y, i));
    END IF;
    IF users AND oldest < uthrough THEN -- end users' rows of hours already rolled up (00005)
    INSERT INTO {{schema}}.usage_daily_user AS u (organization_id, day, end_user, requests, errors, prompt_tokens, completion_tokens, usage_tokens,
            latency_ms, cost_micros, cum_requests, cum_prompt_tokens, cum_completion_tokens, cum_usage_tokens, cum_cost_micros)
        SELECT organization_id, p, end_user, max(requests), max(errors), max(prompt_tokens), max(completion_tokens), max(usage_tokens),
               max(latency_ms), max(cost_micros), array_agg(cr ORDER BY k)::bigint[], array_agg(cp ORDER BY k)::bigint[],
               array_agg(cc ORDER BY k)::bigint[], array_agg(cu ORDER BY k)::bigint[], array_agg(cm ORDER BY k)::bigint[]
        FROM (SELECT organization_id, p, end_user, k, sum(requests) AS requests, sum(errors) AS errors, sum(prompt_tokens) AS prompt_tokens,
                     sum(completion_tokens) AS completion_tokens, sum(usage_tokens) AS usage_tokens, sum(latency_ms) AS latency_ms,
                     sum(cost_micros) AS cost_micros, coalesce(sum(requests) FILTER (WHERE j < k), 0) AS cr,
                     coalesce(sum(prompt_tokens) FILTER (WHERE j < k), 0) AS cp, coalesce(sum(completion_tokens) FILTER (WHERE j < k), 0) AS cc,
                     coalesce(sum(usage_tokens) FILTER (WHERE j < k), 0) AS cu, sum(cost_micros) FILTER (WHERE j < k) AS cm
              FROM (SELECT n.organization_id, date_trunc('day', n.created_at, 'UTC') AS p, n.end_user, extract(hour FROM n.created_at AT TIME ZONE 'UTC')::integer AS j,
                             count(*) AS requests, count(*) FILTER (WHERE n.status >= 400) AS errors, sum(n.prompt_tokens) AS prompt_tokens,
                             sum(n.completion_tokens) AS completion_tokens, sum(n.usage_tokens) AS usage_tokens,
                             sum(greatest(n.latency_ms, 0)) AS latency_ms, sum(n.cost_micros) AS cost_micros
                      FROM new_rows n WHERE n.end_user IS NOT NULL AND n.created_at < uthrough GROUP BY 1, 2, 3, 4) s
              CROSS JOIN generate_series(0, 24) k GROUP BY 1, 2, 3, 4) c
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (organization_id, day, end_user) DO UPDATE SET
            requests = u.requests + excluded.requests, errors = u.errors + excluded.errors, prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
            completion_tokens = u.completion_tokens + excluded.completion_tokens, usage_tokens = u.usage_tokens + excluded.usage_tokens,
            latency_ms = u.latency_ms + excluded.latency_ms, cost_micros = CASE WHEN u.cost_micros IS NULL THEN excluded.cost_micros
                WHEN excluded.cost_micros IS NULL THEN u.cost_micros ELSE u.cost_micros + excluded.cost_micros END,
            cum_requests = {{schema}}.usage_cum_add(u.cum_requests, excluded.cum_requests),
            cum_prompt_tokens = {{schema}}.usage_cum_add(u.cum_prompt_tokens, excluded.cum_prompt_tokens),
            cum_completion_tokens = {{schema}}.usage_cum_add(u.cum_completion_tokens, excluded.cum_completion_tokens),
            cum_usage_tokens = {{schema}}.usage_cum_add(u.cum_usage_tokens, excluded.cum_usage_tokens),
            cum_cost_micros = {{schema}}.usage_cum_add(u.cum_cost_micros, excluded.cum_cost_micros);
        IF oldest < through THEN -- and of days already rolled up
        INSERT INTO {{schema}}.usage_monthly_user AS u (organization_id, month, end_user, requests, errors, prompt_tokens, completion_tokens, usage_tokens,
                latency_ms, cost_micros, cum_requests, cum_prompt_tokens, cum_completion_tokens, cum_usage_tokens, cum_cost_micros)
            SELECT organization_id, p, end_user, max(requests), max(errors), max(prompt_tokens), max(completion_tokens), max(usage_tokens),
                   max(latency_ms), max(cost_micros), array_agg(cr ORDER BY k)::bigint[], array_agg(cp ORDER BY k)::bigint[],
                   array_agg(cc ORDER BY k)::bigint[], array_agg(cu ORDER BY k)::bigint[], array_agg(cm ORDER BY k)::bigint[]
            FROM (SELECT organization_id, p, end_user, k, sum(requests) AS requests, sum(errors) AS errors, sum(prompt_tokens) AS prompt_tokens,
                         sum(completion_tokens) AS completion_tokens, sum(usage_tokens) AS usage_tokens, sum(latency_ms) AS latency_ms,
                         sum(cost_micros) AS cost_micros, coalesce(sum(requests) FILTER (WHERE j < k), 0) AS cr,
                         coalesce(sum(prompt_tokens) FILTER (WHERE j < k), 0) AS cp, coalesce(sum(completion_tokens) FILTER (WHERE j < k), 0) AS cc,
                         coalesce(sum(usage_tokens) FILTER (WHERE j < k), 0) AS cu, sum(cost_micros) FILTER (WHERE j < k) AS cm
                  FROM (SELECT n.organization_id, date_trunc('month', n.created_at, 'UTC') AS p, n.end_user, extract(day FROM n.created_at AT TIME ZONE 'UTC')::integer - 1 AS j,
                                 count(*) AS requests, count(*) FILTER (WHERE n.status >= 400) AS errors, sum(n.prompt_tokens) AS prompt_tokens,
                                 sum(n.completion_tokens) AS completion_tokens, sum(n.usage_tokens) AS usage_tokens,
                                 sum(greatest(n.latency_ms, 0)) AS latency_ms, sum(n.cost_micros) AS cost_micros
                          FROM new_rows n WHERE n.end_user IS NOT NULL AND n.created_at < through GROUP BY 1, 2, 3, 4) s
                  CROSS JOIN generate_series(0, 31) k GROUP BY 1, 2, 3, 4) c
            GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
            ON CONFLICT (organization_id, month, end_user) DO UPDATE SET
                requests = u.requests + excluded.requests, errors = u.errors + excluded.errors, prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
                completion_tokens = u.completion_tokens + excluded.completion_tokens, usage_tokens = u.usage_tokens + excluded.usage_tokens,
                latency_ms = u.latency_ms + excluded.latency_ms, cost_micros = CASE WHEN u.cost_micros IS NULL THEN excluded.cost_micros
                    WHEN excluded.cost_micros IS NULL THEN u.cost_micros ELSE u.cost_micros + excluded.cost_micros END,
                cum_requests = {{schema}}.usage_cum_add(u.cum_requests, excluded.cum_requests),
                cum_prompt_tokens = {{schema}}.usage_cum_add(u.cum_prompt_tokens, excluded.cum_prompt_tokens),
                cum_completion_tokens = {{schema}}.usage_cum_add(u.cum_completion_tokens, excluded.cum_completion_tokens),
                cum_usage_tokens = {{schema}}.usage_cum_add(u.cum_usage_tokens, excluded.cum_usage_tokens),
                cum_cost_micros = {{schema}}.usage_cum_add(u.cum_cost_micros, excluded.cum_cost_micros);
        END IF;
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
-- usage_roll_days adds the end users' hours from user_through to the last
-- one over (by five minutes) to their days, and sums the days from
-- daily_through to the last one over for an hour (UTC) from the hourly
-- rollups into the daily ones (replacing what they held for those days)
-- and the end users' into their months; it advances user_through and
-- daily_through and returns the number of days rolled (0: none due, or
-- another caller did it). It waits at most 2 s for the writers (see
-- 00004) and then fails, to be tried again later, rather than hold them
-- off behind it for longer.
CREATE OR REPLACE FUNCTION {{schema}}.usage_roll_days() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    upto     timestamptz := date_trunc('day', now() - interval '1 hour', 'UTC');
    uupto    timestamptz := date_trunc('hour', now() - interval '5 minutes', 'UTC');
    through  timestamptz;
    uthrough timestamptz;
BEGIN
    SELECT daily_through, user_through INTO through, uthrough FROM {{schema}}.usage_rollup_state;
    IF through >= upto AND uthrough >= uupto THEN
        RETURN 0;
    END IF;
    PERFORM set_config('lock_timeout', '2s', true);
    LOCK TABLE {{schema}}.usage_hourly IN SHARE MODE;
    SELECT daily_through, user_through INTO through, uthrough FROM {{schema}}.usage_rollup_state FOR UPDATE;
    IF uthrough < uupto THEN
    INSERT INTO {{schema}}.usage_daily_user AS u (organization_id, day, end_user, requests, errors, prompt_tokens, completion_tokens, usage_tokens,
            latency_ms, cost_micros, cum_requests, cum_prompt_tokens, cum_completion_tokens, cum_usage_tokens, cum_cost_micros)
        SELECT organization_id, p, end_user, max(requests), max(errors), max(prompt_tokens), max(completion_tokens), max(usage_tokens),
               max(latency_ms), max(cost_micros), array_agg(cr ORDER BY k)::bigint[], array_agg(cp ORDER BY k)::bigint[],
               array_agg(cc ORDER BY k)::bigint[], array_agg(cu ORDER BY k)::bigint[], array_agg(cm ORDER BY k)::bigint[]
        FROM (SELECT organization_id, p, end_user, k, sum(requests) AS requests, sum(errors) AS errors, sum(prompt_tokens) AS prompt_tokens,
                     sum(completion_tokens) AS completion_tokens, sum(usage_tokens) AS usage_tokens, sum(latency_ms) AS latency_ms,
                     sum(cost_micros) AS cost_micros, coalesce(sum(requests) FILTER (WHERE j < k), 0) AS cr,
                     coalesce(sum(prompt_tokens) FILTER (WHERE j < k), 0) AS cp, coalesce(sum(completion_tokens) FILTER (WHERE j < k), 0) AS cc,
                     coalesce(sum(usage_tokens) FILTER (WHERE j < k), 0) AS cu, sum(cost_micros) FILTER (WHERE j < k) AS cm
              FROM (SELECT organization_id, date_trunc('day', hour, 'UTC') AS p, end_user, extract(hour FROM hour AT TIME ZONE 'UTC')::integer AS j,
                            requests, errors, prompt_tokens, completion_tokens, usage_tokens, latency_ms, cost_micros
                    FROM {{schema}}.usage_hourly_user WHERE hour >= uthrough AND hour < uupto) s
              CROSS JOIN generate_series(0, 24) k GROUP BY 1, 2, 3, 4) c
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (organization_id, day, end_user) DO UPDATE SET
            requests = u.requests + excluded.requests, errors = u.errors + excluded.errors, prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
            completion_tokens = u.completion_tokens + excluded.completion_tokens, usage_tokens = u.usage_tokens + excluded.usage_tokens,
            latency_ms = u.latency_ms + excluded.latency_ms, cost_micros = CASE WHEN u.cost_micros IS NULL THEN excluded.cost_micros
                WHEN excluded.cost_micros IS NULL THEN u.cost_micros ELSE u.cost_micros + excluded.cost_micros END,
            cum_requests = {{schema}}.usage_cum_add(u.cum_requests, excluded.cum_requests),
            cum_prompt_tokens = {{schema}}.usage_cum_add(u.cum_prompt_tokens, excluded.cum_prompt_tokens),
            cum_completion_tokens = {{schema}}.usage_cum_add(u.cum_completion_tokens, excluded.cum_completion_tokens),
            cum_usage_tokens = {{schema}}.usage_cum_add(u.cum_usage_tokens, excluded.cum_usage_tokens),
            cum_cost_micros = {{schema}}.usage_cum_add(u.cum_cost_micros, excluded.cum_cost_micros);
        UPDATE {{schema}}.usage_rollup_state SET user_through = uupto;
    END IF;
    IF through >= upto THEN
        RETURN 0;
    END IF;
    INSERT INTO {{schema}}.usage_daily AS u (organization_id, day, model, api_key_id, requests, errors, prompt_tokens,
                         completion_tokens, usage_tokens, latency_ms, cost_micros, client_errors, latency_histogram)
    SELECT organization_id, date_trunc('day', hour, 'UTC'), model, api_key_id, sum(requests), sum(errors), sum(prompt_tokens),
           sum(completion_tokens), sum(usage_tokens), sum(latency_ms), sum(cost_micros), sum(client_errors),
           {{schema}}.usage_histogram_sum(latency_histogram)
    FROM {{schema}}.usage_hourly WHERE hour >= through AND hour < upto
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (organization_id, day, model, api_key_id) DO UPDATE SET
        requests = excluded.requests, errors = excluded.errors, prompt_tokens = excluded.prompt_tokens,
        completion_tokens = excluded.completion_tokens, usage_tokens = excluded.usage_tokens,
        latency_ms = excluded.latency_ms, cost_micros = excluded.cost_micros,
        client_errors = excluded.client_errors, latency_histogram = excluded.latency_histogram;
    -- The end users' months from the first one of the days [through,
    -- upto), summed again from their days (whole: user_through >= upto),
    -- replacing what they held, like usage_daily's days above.
    INSERT INTO {{schema}}.usage_monthly_user AS u (organization_id, month, end_user, requests, errors, prompt_tokens, completion_tokens, usage_tokens,
        latency_ms, cost_micros, cum_requests, cum_prompt_tokens, cum_completion_tokens, cum_usage_tokens, cum_cost_micros)
    SELECT organization_id, p, end_user, max(requests), max(errors), max(prompt_tokens), max(completion_tokens), max(usage_tokens),
           max(latency_ms), max(cost_micros), array_agg(cr ORDER BY k)::bigint[], array_agg(cp ORDER BY k)::bigint[],
           array_agg(cc ORDER BY k)::bigint[], array_agg(cu ORDER BY k)::bigint[], array_agg(cm ORDER BY k)::bigint[]
    FROM (SELECT organization_id, p, end_user, k, sum(requests) AS requests, sum(errors) AS errors, sum(prompt_tokens) AS prompt_tokens,
                 sum(completion_tokens) AS completion_tokens, sum(usage_tokens) AS usage_tokens, sum(latency_ms) AS latency_ms,
                 sum(cost_micros) AS cost_micros, coalesce(sum(requests) FILTER (WHERE j < k), 0) AS cr,
                 coalesce(sum(prompt_tokens) FILTER (WHERE j < k), 0) AS cp, coalesce(sum(completion_tokens) FILTER (WHERE j < k), 0) AS cc,
                 coalesce(sum(usage_tokens) FILTER (WHERE j < k), 0) AS cu, sum(cost_micros) FILTER (WHERE j < k) AS cm
          FROM (SELECT organization_id, date_trunc('month', day, 'UTC') AS p, end_user, extract(day FROM day AT TIME ZONE 'UTC')::integer - 1 AS j,
                        requests, errors, prompt_tokens, completion_tokens, usage_tokens, latency_ms, cost_micros
                FROM {{schema}}.usage_daily_user WHERE day >= date_trunc('month', through, 'UTC') AND day < upto) s
          CROSS JOIN generate_series(0, 31) k GROUP BY 1, 2, 3, 4) c
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (organization_id, month, end_user) DO UPDATE SET
        requests = excluded.requests, errors = excluded.errors, prompt_tokens = excluded.prompt_tokens,
        completion_tokens = excluded.completion_tokens, usage_tokens = excluded.usage_tokens, latency_ms = excluded.latency_ms,
        cost_micros = excluded.cost_micros, cum_requests = excluded.cum_requests, cum_prompt_tokens = excluded.cum_prompt_tokens,
        cum_completion_tokens = excluded.cum_completion_tokens, cum_usage_tokens = excluded.cum_usage_tokens,
        cum_cost_micros = excluded.cum_cost_micros;
    UPDATE {{schema}}.usage_rollup_state SET daily_through = upto;
    RETURN extract(day FROM upto - through)::integer;
END
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION {{schema}}.usage_roll_days() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {{schema}}.usage_roll_days() TO {{app}};

-- +goose StatementBegin
-- usage_reroll_org sums org's daily rollups again from its hourly ones
-- (the end users' up to this place's user_through, the others' and the
-- end users' months up to its daily_through): after `org move` has
-- copied an organization's hourly rollups here from a place whose marks
-- differ (the owner's alone: no grant).
CREATE OR REPLACE FUNCTION {{schema}}.usage_reroll_org(org uuid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    through  timestamptz;
    uthrough timestamptz;
BEGIN
    -- FOR UPDATE: no roll between this and the inserts (the hours and
    -- days it would add are after the marks, and the deletes would take
    -- them back).
    SELECT daily_through, user_through INTO through, uthrough FROM {{schema}}.usage_rollup_state FOR UPDATE;
    DELETE FROM {{schema}}.usage_daily WHERE organization_id = org;
    DELETE FROM {{schema}}.usage_daily_user WHERE organization_id = org;
    DELETE FROM {{schema}}.usage_monthly_user WHERE organization_id = org;
    INSERT INTO {{schema}}.usage_daily AS u (organization_id, day, model, api_key_id, requests, errors, prompt_tokens,
                         completion_tokens, usage_tokens, latency_ms, cost_micros, client_errors, latency_histogram)
    SELECT organization_id, date_trunc('day', hour, 'UTC'), model, api_key_id, sum(requests), sum(errors), sum(prompt_tokens),
           sum(completion_tokens), sum(usage_tokens), sum(latency_ms), sum(cost_micros), sum(client_errors),
           {{schema}}.usage_histogram_sum(latency_histogram)
    FROM {{schema}}.usage_hourly WHERE hour >= '-infinity' AND hour < through AND organization_id = org
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4;
    INSERT INTO {{schema}}.usage_daily_user AS u (organization_id, day, end_user, requests, errors, prompt_tokens, completion_tokens, usage_tokens,
        latency_ms, cost_micros, cum_requests, cum_prompt_tokens, cum_completion_tokens, cum_usage_tokens, cum_cost_micros)
    SELECT organization_id, p, end_user, max(requests), max(errors), max(prompt_tokens), max(completion_tokens), max(usage_tokens),
           max(latency_ms), max(cost_micros), array_agg(cr ORDER BY k)::bigint[], array_agg(cp ORDER BY k)::bigint[],
           array_agg(cc ORDER BY k)::bigint[], array_agg(cu ORDER BY k)::bigint[], array_agg(cm ORDER BY k)::bigint[]
    FROM (SELECT organization_id, p, end_user, k, sum(requests) AS requests, sum(errors) AS errors, sum(prompt_tokens) AS prompt_tokens,
                 sum(completion_tokens) AS completion_tokens, sum(usage_tokens) AS usage_tokens, sum(latency_ms) AS latency_ms,
                 sum(cost_micros) AS cost_micros, coalesce(sum(requests) FILTER (WHERE j < k), 0) AS cr,
                 coalesce(sum(prompt_tokens) FILTER (WHERE j < k), 0) AS cp, coalesce(sum(completion_tokens) FILTER (WHERE j < k), 0) AS cc,
                 coalesce(sum(usage_tokens) FILTER (WHERE j < k), 0) AS cu, sum(cost_micros) FILTER (WHERE j < k) AS cm
          FROM (SELECT organization_id, date_trunc('day', hour, 'UTC') AS p, end_user, extract(hour FROM hour AT TIME ZONE 'UTC')::integer AS j,
                        requests, errors, prompt_tokens, completion_tokens, usage_tokens, latency_ms, cost_micros
                FROM {{schema}}.usage_hourly_user WHERE hour < uthrough AND organization_id = org) s
          CROSS JOIN generate_series(0, 24) k GROUP BY 1, 2, 3, 4) c
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
    INSERT INTO {{schema}}.usage_monthly_user AS u (organization_id, month, end_user, requests, errors, prompt_tokens, completion_tokens, usage_tokens,
        latency_ms, cost_micros, cum_requests, cum_prompt_tokens, cum_completion_tokens, cum_usage_tokens, cum_cost_micros)
    SELECT organization_id, p, end_user, max(requests), max(errors), max(prompt_tokens), max(completion_tokens), max(usage_tokens),
           max(latency_ms), max(cost_micros), array_agg(cr ORDER BY k)::bigint[], array_agg(cp ORDER BY k)::bigint[],
           array_agg(cc ORDER BY k)::bigint[], array_agg(cu ORDER BY k)::bigint[], array_agg(cm ORDER BY k)::bigint[]
    FROM (SELECT organization_id, p, end_user, k, sum(requests) AS requests, sum(errors) AS errors, sum(prompt_tokens) AS prompt_tokens,
                 sum(completion_tokens) AS completion_tokens, sum(usage_tokens) AS usage_tokens, sum(latency_ms) AS latency_ms,
                 sum(cost_micros) AS cost_micros, coalesce(sum(requests) FILTER (WHERE j < k), 0) AS cr,
                 coalesce(sum(prompt_tokens) FILTER (WHERE j < k), 0) AS cp, coalesce(sum(completion_tokens) FILTER (WHERE j < k), 0) AS cc,
                 coalesce(sum(usage_tokens) FILTER (WHERE j < k), 0) AS cu, sum(cost_micros) FILTER (WHERE j < k) AS cm
          FROM (SELECT organization_id, date_trunc('month', day, 'UTC') AS p, end_user, extract(day FROM day AT TIME ZONE 'UTC')::integer - 1 AS j,
                        requests, errors, prompt_tokens, completion_tokens, usage_tokens, latency_ms, cost_micros
                FROM {{schema}}.usage_daily_user WHERE day < through AND organization_id = org) s
          CROSS JOIN generate_series(0, 31) k GROUP BY 1, 2, 3, 4) c
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
END
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION {{schema}}.usage_reroll_org(uuid) FROM PUBLIC;

-- +goose Down
LOCK TABLE {{schema}}.prompts IN SHARE ROW EXCLUSIVE MODE;
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION {{schema}}.prompts_rollup() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    users   boolean;     -- a row has an end user
    oldest  timestamptz; -- the oldest row
    through timestamptz; -- usage_rollup_state's, read after the upsert into usage_hourly
BEGIN
    -- The histogram is counted and merged inline (00003).
    INSERT INTO {{schema}}.usage_hourly AS u (organization_id, hour, model, api_key_id, requests, errors,
                                   prompt_tokens, completion_tokens, usage_tokens, latency_ms,
                                   cost_micros, client_errors, latency_histogram)
    SELECT n.organization_id, date_trunc('hour', n.created_at, 'UTC'), n.model, n.api_key_id,
           count(*), count(*) FILTER (WHERE n.status >= 400),
           sum(n.prompt_tokens), sum(n.completion_tokens), sum(n.usage_tokens), sum(greatest(n.latency_ms, 0)),
           sum(n.cost_micros), count(*) FILTER (WHERE n.status BETWEEN 400 AND 499),
           ARRAY[count(*) FILTER (WHERE n.b = 0), count(*) FILTER (WHERE n.b = 1), count(*) FILTER (WHERE n.b = 2),
                 count(*) FILTER (WHERE n.b = 3), count(*) FILTER (WHERE n.b = 4), count(*) FILTER (WHERE n.b = 5),
                 count(*) FILTER (WHERE n.b = 6), count(*) FILTER (WHERE n.b = 7), count(*) FILTER (WHERE n.b = 8),
                 count(*) FILTER (WHERE n.b = 9), count(*) FILTER (WHERE n.b = 10), count(*) FILTER (WHERE n.b = 11),
                 count(*) FILTER (WHERE n.b = 12), count(*) FILTER (WHERE n.b = 13), count(*) FILTER (WHERE n.b = 14),
                 count(*) FILTER (WHERE n.b = 15), count(*) FILTER (WHERE n.b = 16), count(*) FILTER (WHERE n.b = 17),
                 count(*) FILTER (WHERE n.b = 18), count(*) FILTER (WHERE n.b = 19), count(*) FILTER (WHERE n.b = 20),
                 count(*) FILTER (WHERE n.b = 21), count(*) FILTER (WHERE n.b = 22), count(*) FILTER (WHERE n.b = 23),
                 count(*) FILTER (WHERE n.b = 24), count(*) FILTER (WHERE n.b = 25), count(*) FILTER (WHERE n.b = 26),
                 count(*) FILTER (WHERE n.b = 27), count(*) FILTER (WHERE n.b = 28), count(*) FILTER (WHERE n.b = 29),
                 count(*) FILTER (WHERE n.b = 30)]
    FROM (SELECT *, width_bucket(greatest(latency_ms, 0), '{1,2,3,5,7,10,15,20,30,50,70,100,150,200,300,500,700,1000,1500,2000,3000,5000,7000,10000,15000,20000,30000,60000,120000,300000}'::integer[]) AS b FROM new_rows) n
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (organization_id, hour, model, api_key_id) DO UPDATE SET
        requests = u.requests + excluded.requests,
        errors = u.errors + excluded.errors,
        prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = u.completion_tokens + excluded.completion_tokens,
        usage_tokens = u.usage_tokens + excluded.usage_tokens,
        latency_ms = u.latency_ms + excluded.latency_ms,
        cost_micros = CASE WHEN u.cost_micros IS NULL THEN excluded.cost_micros -- NULL + x would lose x
                           WHEN excluded.cost_micros IS NULL THEN u.cost_micros
                           ELSE u.cost_micros + excluded.cost_micros END,
        client_errors = u.client_errors + excluded.client_errors,
        latency_histogram = (SELECT array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i)
                             FROM unnest(u.latency_histogram, excluded.latency_histogram) WITH ORDINALITY t(x, y, i));
    SELECT bool_or(n.end_user IS NOT NULL), min(n.created_at), (SELECT s.daily_through FROM {{schema}}.usage_rollup_state s)
      INTO users, oldest, through FROM new_rows n;
    IF users THEN
        INSERT INTO {{schema}}.usage_hourly_user AS u (organization_id, hour, end_user, requests, errors,
                                        prompt_tokens, completion_tokens, usage_tokens, latency_ms, cost_micros)
    SELECT n.organization_id, date_trunc('hour', n.created_at, 'UTC'), n.end_user,
           count(*), count(*) FILTER (WHERE n.status >= 400),
           sum(n.prompt_tokens), sum(n.completion_tokens), sum(n.usage_tokens), sum(greatest(n.latency_ms, 0)),
           sum(n.cost_micros)
    FROM new_rows n
    WHERE n.end_user IS NOT NULL
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (organization_id, hour, end_user) DO UPDATE SET
        requests = u.requests + excluded.requests,
        errors = u.errors + excluded.errors,
        prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = u.completion_tokens + excluded.completion_tokens,
        usage_tokens = u.usage_tokens + excluded.usage_tokens,
        latency_ms = u.latency_ms + excluded.latency_ms,
        cost_micros = CASE WHEN u.cost_micros IS NULL THEN excluded.cost_micros -- NULL + x would lose x
                           WHEN excluded.cost_micros IS NULL THEN u.cost_micros
                           ELSE u.cost_micros + excluded.cost_micros END;
    END IF;
    IF oldest < through THEN -- rows of days already rolled up
        INSERT INTO {{schema}}.usage_daily AS u (organization_id, day, model, api_key_id, requests, errors,
                                   prompt_tokens, completion_tokens, usage_tokens, latency_ms,
                                   cost_micros, client_errors, latency_histogram)
    SELECT n.organization_id, date_trunc('day', n.created_at, 'UTC'), n.model, n.api_key_id,
           count(*), count(*) FILTER (WHERE n.status >= 400),
           sum(n.prompt_tokens), sum(n.completion_tokens), sum(n.usage_tokens), sum(greatest(n.latency_ms, 0)),
           sum(n.cost_micros), count(*) FILTER (WHERE n.status BETWEEN 400 AND 499),
           ARRAY[count(*) FILTER (WHERE n.b = 0), count(*) FILTER (WHERE n.b = 1), count(*) FILTER (WHERE n.b = 2),
                 count(*) FILTER (WHERE n.b = 3), count(*) FILTER (WHERE n.b = 4), count(*) FILTER (WHERE n.b = 5),
                 count(*) FILTER (WHERE n.b = 6), count(*) FILTER (WHERE n.b = 7), count(*) FILTER (WHERE n.b = 8),
                 count(*) FILTER (WHERE n.b = 9), count(*) FILTER (WHERE n.b = 10), count(*) FILTER (WHERE n.b = 11),
                 count(*) FILTER (WHERE n.b = 12), count(*) FILTER (WHERE n.b = 13), count(*) FILTER (WHERE n.b = 14),
                 count(*) FILTER (WHERE n.b = 15), count(*) FILTER (WHERE n.b = 16), count(*) FILTER (WHERE n.b = 17),
                 count(*) FILTER (WHERE n.b = 18), count(*) FILTER (WHERE n.b = 19), count(*) FILTER (WHERE n.b = 20),
                 count(*) FILTER (WHERE n.b = 21), count(*) FILTER (WHERE n.b = 22), count(*) FILTER (WHERE n.b = 23),
                 count(*) FILTER (WHERE n.b = 24), count(*) FILTER (WHERE n.b = 25), count(*) FILTER (WHERE n.b = 26),
                 count(*) FILTER (WHERE n.b = 27), count(*) FILTER (WHERE n.b = 28), count(*) FILTER (WHERE n.b = 29),
                 count(*) FILTER (WHERE n.b = 30)]
    FROM (SELECT *, width_bucket(greatest(latency_ms, 0), '{1,2,3,5,7,10,15,20,30,50,70,100,150,200,300,500,700,1000,1500,2000,3000,5000,7000,10000,15000,20000,30000,60000,120000,300000}'::integer[]) AS b FROM new_rows WHERE created_at < through) n
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (organization_id, day, model, api_key_id) DO UPDATE SET
        requests = u.requests + excluded.requests,
        errors = u.errors + excluded.errors,
        prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = u.completion_tokens + excluded.completion_tokens,
        usage_tokens = u.usage_tokens + excluded.usage_tokens,
        latency_ms = u.latency_ms + excluded.latency_ms,
        cost_micros = CASE WHEN u.cost_micros IS NULL THEN excluded.cost_micros -- NULL + x would lose x
                           WHEN excluded.cost_micros IS NULL THEN u.cost_micros
                           ELSE u.cost_micros + excluded.cost_micros END,
        client_errors = u.client_errors + excluded.client_errors,
        latency_histogram = (SELECT array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i)
                             FROM unnest(u.latency_histogram, excluded.latency_histogram) WITH ORDINALITY t(x, y, i));
        IF users THEN
            INSERT INTO {{schema}}.usage_daily_user AS u (organization_id, day, end_user, requests, errors,
                                        prompt_tokens, completion_tokens, usage_tokens, latency_ms, cost_micros)
    SELECT n.organization_id, date_trunc('day', n.created_at, 'UTC'), n.end_user,
           count(*), count(*) FILTER (WHERE n.status >= 400),
           sum(n.prompt_tokens), sum(n.completion_tokens), sum(n.usage_tokens), sum(greatest(n.latency_ms, 0)),
           sum(n.cost_micros)
    FROM new_rows n
    WHERE n.end_user IS NOT NULL AND n.created_at < through
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (organization_id, day, end_user) DO UPDATE SET
        requests = u.requests + excluded.requests,
        errors = u.errors + excluded.errors,
        prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = u.completion_tokens + excluded.completion_tokens,
        usage_tokens = u.usage_tokens + excluded.usage_tokens,
        latency_ms = u.latency_ms + excluded.latency_ms,
        cost_micros = CASE WHEN u.cost_micros IS NULL THEN excluded.cost_micros -- NULL + x would lose x
                           WHEN excluded.cost_micros IS NULL THEN u.cost_micros
                           ELSE u.cost_micros + excluded.cost_micros END;
        END IF;
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
-- +goose StatementBegin
-- usage_roll_days sums the days from daily_through to the last one over
-- for an hour (UTC) from the hourly rollups into the daily ones, replacing
-- what they held for those days, advances daily_through and returns the
-- number of days rolled (0: nothing due, or another caller did it). It
-- waits at most 2 s for the writers (see above) and then fails, to be
-- tried again later, rather than hold them off behind it for longer.
CREATE OR REPLACE FUNCTION {{schema}}.usage_roll_days() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    upto    timestamptz := date_trunc('day', now() - interval '1 hour', 'UTC');
    through timestamptz;
BEGIN
    SELECT daily_through INTO through FROM {{schema}}.usage_rollup_state;
    IF through >= upto THEN
        RETURN 0;
    END IF;
    PERFORM set_config('lock_timeout', '2s', true);
    LOCK TABLE {{schema}}.usage_hourly IN SHARE MODE;
    SELECT daily_through INTO through FROM {{schema}}.usage_rollup_state FOR UPDATE;
    IF through >= upto THEN
        RETURN 0;
    END IF;
    INSERT INTO {{schema}}.usage_daily AS u (organization_id, day, model, api_key_id, requests, errors, prompt_tokens,
                         completion_tokens, usage_tokens, latency_ms, cost_micros, client_errors, latency_histogram)
    SELECT organization_id, date_trunc('day', hour, 'UTC'), model, api_key_id, sum(requests), sum(errors), sum(prompt_tokens),
           sum(completion_tokens), sum(usage_tokens), sum(latency_ms), sum(cost_micros), sum(client_errors),
           {{schema}}.usage_histogram_sum(latency_histogram)
    FROM {{schema}}.usage_hourly WHERE hour >= through AND hour < upto
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (organization_id, day, model, api_key_id) DO UPDATE SET
        requests = excluded.requests, errors = excluded.errors, prompt_tokens = excluded.prompt_tokens,
        completion_tokens = excluded.completion_tokens, usage_tokens = excluded.usage_tokens,
        latency_ms = excluded.latency_ms, cost_micros = excluded.cost_micros,
        client_errors = excluded.client_errors, latency_histogram = excluded.latency_histogram;
    INSERT INTO {{schema}}.usage_daily_user AS u (organization_id, day, end_user, requests, errors, prompt_tokens,
                         completion_tokens, usage_tokens, latency_ms, cost_micros)
    SELECT organization_id, date_trunc('day', hour, 'UTC'), end_user, sum(requests), sum(errors), sum(prompt_tokens),
           sum(completion_tokens), sum(usage_tokens), sum(latency_ms), sum(cost_micros)
    FROM {{schema}}.usage_hourly_user WHERE hour >= through AND hour < upto
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (organization_id, day, end_user) DO UPDATE SET
        requests = excluded.requests, errors = excluded.errors, prompt_tokens = excluded.prompt_tokens,
        completion_tokens = excluded.completion_tokens, usage_tokens = excluded.usage_tokens,
        latency_ms = excluded.latency_ms, cost_micros = excluded.cost_micros;
    UPDATE {{schema}}.usage_rollup_state SET daily_through = upto;
    RETURN extract(day FROM upto - through)::integer;
END
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION {{schema}}.usage_roll_days() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {{schema}}.usage_roll_days() TO {{app}};
-- +goose StatementBegin
-- usage_reroll_org sums org's daily rollups again from its hourly ones,
-- for the days before this place's daily_through: after `org move` has
-- copied an organization's hourly rollups here from a place whose
-- daily_through differs (the owner's alone: no grant).
CREATE OR REPLACE FUNCTION {{schema}}.usage_reroll_org(org uuid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    through timestamptz;
BEGIN
    -- FOR UPDATE: no roll between this and the inserts (the days it would
    -- add are after through, and the deletes would take them back).
    SELECT daily_through INTO through FROM {{schema}}.usage_rollup_state FOR UPDATE;
    DELETE FROM {{schema}}.usage_daily WHERE organization_id = org;
    DELETE FROM {{schema}}.usage_daily_user WHERE organization_id = org;
    INSERT INTO {{schema}}.usage_daily AS u (organization_id, day, model, api_key_id, requests, errors, prompt_tokens,
                         completion_tokens, usage_tokens, latency_ms, cost_micros, client_errors, latency_histogram)
    SELECT organization_id, date_trunc('day', hour, 'UTC'), model, api_key_id, sum(requests), sum(errors), sum(prompt_tokens),
           sum(completion_tokens), sum(usage_tokens), sum(latency_ms), sum(cost_micros), sum(client_errors),
           {{schema}}.usage_histogram_sum(latency_histogram)
    FROM {{schema}}.usage_hourly WHERE hour >= '-infinity' AND hour < through AND organization_id = org
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4;
    INSERT INTO {{schema}}.usage_daily_user AS u (organization_id, day, end_user, requests, errors, prompt_tokens,
                         completion_tokens, usage_tokens, latency_ms, cost_micros)
    SELECT organization_id, date_trunc('day', hour, 'UTC'), end_user, sum(requests), sum(errors), sum(prompt_tokens),
           sum(completion_tokens), sum(usage_tokens), sum(latency_ms), sum(cost_micros)
    FROM {{schema}}.usage_hourly_user WHERE hour >= '-infinity' AND hour < through AND organization_id = org
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3;
END
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION {{schema}}.usage_reroll_org(uuid) FROM PUBLIC;
-- 00004's usage_daily_user holds whole days before daily_through only.
DELETE FROM {{schema}}.usage_daily_user WHERE day >= (SELECT daily_through FROM {{schema}}.usage_rollup_state);
DROP TABLE {{schema}}.usage_monthly_user;
DROP FUNCTION {{schema}}.usage_cum_add(bigint[], bigint[]);
ALTER TABLE {{schema}}.usage_daily_user DROP COLUMN cum_requests, DROP COLUMN cum_prompt_tokens,
    DROP COLUMN cum_completion_tokens, DROP COLUMN cum_usage_tokens, DROP COLUMN cum_cost_micros;
ALTER TABLE {{schema}}.usage_rollup_state DROP COLUMN user_through;
