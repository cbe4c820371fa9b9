-- the rollup trigger overwrites an hour's latency histogram and client errors with the last statement's instead of adding
-- tests: ./store TestUsageSeriesMatchesRows
CREATE OR REPLACE FUNCTION public.prompts_rollup() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    users    boolean;     -- a row has an end user
    oldest   timestamptz; -- the oldest row
    through  timestamptz; -- usage_rollup_state's, read after the upsert into usage_hourly
    uthrough timestamptz; -- and its user_through (00005)
BEGIN
    -- The histogram is counted and merged by PL/pgSQL functions (00006).
    INSERT INTO public.usage_hourly AS u (organization_id, hour, model, api_key_id, requests, errors,
                                   prompt_tokens, completion_tokens, usage_tokens, latency_ms,
                                   cost_micros, client_errors, latency_histogram)
    SELECT n.organization_id, date_trunc('hour', n.created_at, 'UTC'), n.model, n.api_key_id,
           count(*), count(*) FILTER (WHERE n.status >= 400),
           sum(n.prompt_tokens), sum(n.completion_tokens), sum(n.usage_tokens), sum(greatest(n.latency_ms, 0)),
           sum(n.cost_micros), count(*) FILTER (WHERE n.status BETWEEN 400 AND 499),
           public.usage_histogram_count(array_agg(n.b))
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
        client_errors = excluded.client_errors,
        latency_histogram = excluded.latency_histogram;
    SELECT bool_or(n.end_user IS NOT NULL), min(n.created_at), (SELECT s.daily_through FROM public.usage_rollup_state s),
           (SELECT s.user_through FROM public.usage_rollup_state s)
      INTO users, oldest, through, uthrough FROM new_rows n;
    IF users THEN
        INSERT INTO public.usage_hourly_user AS u (organization_id, hour, end_user, requests, errors,
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
        INSERT INTO public.usage_daily AS u (organization_id, day, model, api_key_id, requests, errors,
                                   prompt_tokens, completion_tokens, usage_tokens, latency_ms,
                                   cost_micros, client_errors, latency_histogram)
    SELECT n.organization_id, date_trunc('day', n.created_at, 'UTC'), n.model, n.api_key_id,
           count(*), count(*) FILTER (WHERE n.status >= 400),
           sum(n.prompt_tokens), sum(n.completion_tokens), sum(n.usage_tokens), sum(greatest(n.latency_ms, 0)),
           sum(n.cost_micros), count(*) FILTER (WHERE n.status BETWEEN 400 AND 499),
           public.usage_histogram_count(array_agg(n.b))
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
        latency_histogram = public.usage_histogram_plus(u.latency_histogram, excluded.latency_histogram);
    END IF;
    IF users AND oldest < uthrough THEN -- end users' rows of hours already rolled up (00005)
    INSERT INTO public.usage_daily_user AS u (organization_id, day, end_user, requests, errors, prompt_tokens, completion_tokens, usage_tokens,
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
            cum_requests = public.usage_cum_add(u.cum_requests, excluded.cum_requests),
            cum_prompt_tokens = public.usage_cum_add(u.cum_prompt_tokens, excluded.cum_prompt_tokens),
            cum_completion_tokens = public.usage_cum_add(u.cum_completion_tokens, excluded.cum_completion_tokens),
            cum_usage_tokens = public.usage_cum_add(u.cum_usage_tokens, excluded.cum_usage_tokens),
            cum_cost_micros = public.usage_cum_add(u.cum_cost_micros, excluded.cum_cost_micros);
        IF oldest < through THEN -- and of days already rolled up
        INSERT INTO public.usage_monthly_user AS u (organization_id, month, end_user, requests, errors, prompt_tokens, completion_tokens, usage_tokens,
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
                cum_requests = public.usage_cum_add(u.cum_requests, excluded.cum_requests),
                cum_prompt_tokens = public.usage_cum_add(u.cum_prompt_tokens, excluded.cum_prompt_tokens),
                cum_completion_tokens = public.usage_cum_add(u.cum_completion_tokens, excluded.cum_completion_tokens),
                cum_usage_tokens = public.usage_cum_add(u.cum_usage_tokens, excluded.cum_usage_tokens),
                cum_cost_micros = public.usage_cum_add(u.cum_cost_micros, excluded.cum_cost_micros);
        END IF;
    END IF;
    RETURN NULL;
END
$$;
