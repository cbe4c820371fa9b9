-- the rollups' latency buckets drift from the bounds the series reads them by (store/usage.go latencyBounds)
-- tests: ./store TestUsageSeriesMatchesRows
CREATE OR REPLACE FUNCTION usage_latency_histogram(latencies integer[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT array_agg(coalesce(x.n, 0) ORDER BY i)
    FROM generate_series(0, 30) i
    LEFT JOIN (
        SELECT width_bucket(greatest(l, 0), '{1,2,3,5,7,10,15,20,30,50,70,100,150,200,300,500,700,1000,1500,2000,3000,5000,7500,10000,15000,20000,30000,60000,120000,300000}'::integer[]) AS b,
               count(*) AS n
        FROM unnest(latencies) l GROUP BY 1) x ON x.b = i
$$;
