-- data-plane: merging a statement's latency histogram into an hour's drops the last bucket (300 s and over)
-- tests: ./store TestUsageSeriesMatchesRows
CREATE OR REPLACE FUNCTION public.usage_histogram_plus(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    h bigint[] := array_fill(0::bigint, ARRAY[31]);
BEGIN
    FOR i IN 1..30 LOOP
        h[i] := coalesce(a[i], 0) + coalesce(b[i], 0);
    END LOOP;
    RETURN h;
END
$$;
