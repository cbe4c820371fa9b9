-- data-plane: the trigger counts latencies of 300 s and over in the bucket before (200-300 s)
-- tests: ./store TestUsageSeriesMatchesRows
CREATE OR REPLACE FUNCTION public.usage_histogram_count(buckets integer[]) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    h bigint[] := array_fill(0::bigint, ARRAY[31]);
    b integer;
BEGIN
    FOREACH b IN ARRAY buckets LOOP
        h[least(b, 29) + 1] := h[least(b, 29) + 1] + 1;
    END LOOP;
    RETURN h;
END
$$;
