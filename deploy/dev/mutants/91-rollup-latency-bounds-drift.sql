-- the rollups' latency buckets drift from the bounds the series reads them by (store/usage.go latencyBounds)
-- tests: ./store TestUsageSeriesMatchesRows
CREATE OR REPLACE FUNCTION public.prompts_rollup() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    users   boolean;     -- a row has an end user
    oldest  timestamptz; -- the oldest row
    through timestamptz; -- usage_rollup_state's, read after the upsert into usage_hourly
BEGIN
    -- The histogram is counted and merged inline (00003).
    INSERT INTO public.usage_hourly AS u (organization_id, hour, model, api_key_id, requests, errors,
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
    FROM (SELECT *, width_bucket(greatest(latency_ms, 0), '{1,2,3,5,7,10,15,20,30,50,70,100,150,200,300,500,700,1000,1500,2000,3000,5000,7500,10000,15000,20000,30000,60000,120000,300000}'::integer[]) AS b FROM new_rows) n
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
    SELECT bool_or(n.end_user IS NOT NULL), min(n.created_at), (SELECT s.daily_through FROM public.usage_rollup_state s)
      INTO users, oldest, through FROM new_rows n;
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
            INSERT INTO public.usage_daily_user AS u (organization_id, day, end_user, requests, errors,
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
