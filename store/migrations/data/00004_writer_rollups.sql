-- The writer's rollups, cut to what each statement must do (issue 17), in
-- every place (placeholders as in 00001_baseline.sql).
--
-- With 10,000 interleaved tenants the writer's statements hold one or two
-- rows each, and each statement's trigger cost more than its insert:
-- per 5,000 one-row statements of distinct tenants (one backend's CPU,
-- in a PL/pgSQL loop, as the app role) the insert and its tenant setting
-- took 325 ms, the reference check 120 ms more, and 00003's
-- prompts_rollup 705 ms more: its upserts into usage_hourly 330 ms,
-- usage_daily 260 ms, usage_hourly_user 115 ms (BenchmarkWriterTenants:
-- 10,000 tenants went from 20-29k rows/s before 00002 to 9-16k). So:
--
--   * usage_daily is no longer written per statement. usage_roll_days,
--     which the writers' maintenance runs (store.RollDays), sums whole
--     UTC days from usage_hourly once they are over (an hour after
--     midnight), and usage_rollup_state.daily_through says up to where:
--     usage_daily holds every day before it, and the reports read the
--     days from it onwards from usage_hourly (store.hourlyUnion).
--   * A row of a day already rolled up (a spooled record replayed after
--     an outage, a clock behind) is added to usage_daily by the trigger
--     as before. The trigger upserts usage_hourly first and only then
--     reads daily_through (a statement of its own: a fresh snapshot);
--     usage_roll_days takes usage_hourly in SHARE mode, which waits for
--     every transaction that has upserted it and holds off the others,
--     so a row is counted either by the roll (committed before it) or by
--     the trigger (after it, seeing the new daily_through), never by
--     both or neither.
--   * usage_hourly_user holds end users only: rows without one are the
--     report's group "" as the total less the end users (store.Usage), so
--     a statement without an end user (most of them) skips that upsert.
--     usage_daily_user is its daily rollup, kept like usage_daily, so a
--     report by end user reads 30 days of a tenant's users in at most 30
--     rows each (a 5M-row tenant with 1,000 end users: 452 ms p50 when
--     every day was summed from the hours).
--
-- The same loop then costs 790 to 840 ms of CPU, against 1,150 before.

-- +goose Up
LOCK TABLE {{schema}}.prompts IN SHARE ROW EXCLUSIVE MODE;

-- usage_rollup_state: one row; usage_daily and usage_daily_user hold
-- every day before daily_through. Not tenant data: the app role reads it
-- in every report.
CREATE TABLE {{schema}}.usage_rollup_state (
    single        boolean PRIMARY KEY DEFAULT true CHECK (single),
    daily_through timestamptz NOT NULL
);
-- Until this migration the trigger kept usage_daily to the row: every day
-- before today is whole in it; today's partial sums go, the first roll
-- sums the day from the hours.
INSERT INTO {{schema}}.usage_rollup_state (daily_through) VALUES (date_trunc('day', now(), 'UTC'));
DELETE FROM {{schema}}.usage_daily WHERE day >= date_trunc('day', now(), 'UTC');
REVOKE ALL ON {{schema}}.usage_rollup_state FROM PUBLIC;
GRANT SELECT ON {{schema}}.usage_rollup_state TO {{app}};

CREATE TABLE {{schema}}.usage_daily_user (LIKE {{schema}}.usage_hourly_user INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE {{schema}}.usage_daily_user RENAME COLUMN hour TO day;
CREATE UNIQUE INDEX usage_daily_user_key ON {{schema}}.usage_daily_user (organization_id, day, end_user);
ALTER TABLE {{schema}}.usage_daily_user ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON {{schema}}.usage_daily_user USING ({{isolation}}) WITH CHECK ({{isolation}});
REVOKE ALL ON {{schema}}.usage_daily_user FROM PUBLIC;
GRANT SELECT ON {{schema}}.usage_daily_user TO {{app}};

INSERT INTO {{schema}}.usage_daily_user AS u (organization_id, day, end_user, requests, errors, prompt_tokens,
                         completion_tokens, usage_tokens, latency_ms, cost_micros)
    SELECT organization_id, date_trunc('day', hour, 'UTC'), end_user, sum(requests), sum(errors), sum(prompt_tokens),
           sum(completion_tokens), sum(usage_tokens), sum(latency_ms), sum(cost_micros)
    FROM {{schema}}.usage_hourly_user WHERE hour >= '-infinity' AND hour < date_trunc('day', now(), 'UTC') AND end_user IS NOT NULL
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3;

DELETE FROM {{schema}}.usage_hourly_user WHERE end_user IS NULL;

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
CREATE FUNCTION {{schema}}.usage_roll_days() RETURNS integer
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
CREATE FUNCTION {{schema}}.usage_reroll_org(org uuid) RETURNS void
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

-- +goose Down
LOCK TABLE {{schema}}.prompts IN SHARE ROW EXCLUSIVE MODE;
-- The days not rolled up yet, and the rows without an end user, back as
-- 00003's trigger kept them.
INSERT INTO {{schema}}.usage_daily AS u (organization_id, day, model, api_key_id, requests, errors, prompt_tokens,
                         completion_tokens, usage_tokens, latency_ms, cost_micros, client_errors, latency_histogram)
    SELECT organization_id, date_trunc('day', hour, 'UTC'), model, api_key_id, sum(requests), sum(errors), sum(prompt_tokens),
           sum(completion_tokens), sum(usage_tokens), sum(latency_ms), sum(cost_micros), sum(client_errors),
           {{schema}}.usage_histogram_sum(latency_histogram)
    FROM {{schema}}.usage_hourly WHERE hour >= (SELECT daily_through FROM {{schema}}.usage_rollup_state) AND hour < 'infinity'
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (organization_id, day, model, api_key_id) DO UPDATE SET
        requests = excluded.requests, errors = excluded.errors, prompt_tokens = excluded.prompt_tokens,
        completion_tokens = excluded.completion_tokens, usage_tokens = excluded.usage_tokens,
        latency_ms = excluded.latency_ms, cost_micros = excluded.cost_micros,
        client_errors = excluded.client_errors, latency_histogram = excluded.latency_histogram;
INSERT INTO {{schema}}.usage_hourly_user (organization_id, hour, end_user, requests, errors, prompt_tokens,
                                          completion_tokens, usage_tokens, latency_ms, cost_micros)
SELECT h.organization_id, h.hour, NULL, h.requests - coalesce(u.requests, 0), h.errors - coalesce(u.errors, 0),
       h.prompt_tokens - coalesce(u.prompt_tokens, 0), h.completion_tokens - coalesce(u.completion_tokens, 0),
       h.usage_tokens - coalesce(u.usage_tokens, 0), h.latency_ms - coalesce(u.latency_ms, 0),
       h.cost_micros - coalesce(u.cost_micros, 0)
FROM (SELECT organization_id, hour, sum(requests) AS requests, sum(errors) AS errors, sum(prompt_tokens) AS prompt_tokens,
             sum(completion_tokens) AS completion_tokens, sum(usage_tokens) AS usage_tokens, sum(latency_ms) AS latency_ms,
             sum(cost_micros) AS cost_micros
      FROM {{schema}}.usage_hourly GROUP BY 1, 2) h
LEFT JOIN (SELECT organization_id, hour, sum(requests) AS requests, sum(errors) AS errors, sum(prompt_tokens) AS prompt_tokens,
                  sum(completion_tokens) AS completion_tokens, sum(usage_tokens) AS usage_tokens, sum(latency_ms) AS latency_ms,
                  sum(cost_micros) AS cost_micros
           FROM {{schema}}.usage_hourly_user GROUP BY 1, 2) u USING (organization_id, hour)
WHERE h.requests > coalesce(u.requests, 0);
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
DROP FUNCTION {{schema}}.usage_reroll_org(uuid);
DROP FUNCTION {{schema}}.usage_roll_days();
DROP TABLE {{schema}}.usage_daily_user;
DROP TABLE {{schema}}.usage_rollup_state;
