-- The data plane as the main set's migrations 00001 to 00015 left it in
-- the public schema: prompts (partitioned by UTC day, with its default
-- partition), usage_hourly (its rollups, kept by a statement trigger) and
-- the functions they need, in one place (a tenant schema or a database
-- target's public schema). The shared place does not run it: its tables
-- were made by the main set, and this file is recorded there as applied
-- (the marker below; store/dataplane.go).
--
-- Placeholders, filled in per place by store/dataplane.go (never from
-- input): {{schema}} the schema, {{app}} the runtime role, {{isolation}}
-- the predicate of every policy: the tenant setting and, in a tenant
-- schema, also the organization the schema belongs to, so that a
-- statement in another tenant's context that names this schema sees and
-- writes nothing.
--
-- Differences from the shared place: no foreign key and no check of the
-- API key against api_keys (the control plane may be in another
-- database); a row's organization is checked against the tenant setting
-- (and the schema's organization) by prompts_check_references.
--
-- bulkhead:shared-baseline

-- +goose Up
CREATE FUNCTION {{schema}}.prompts_row_id(created_at timestamptz, id uuid) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
    SELECT (lpad(to_hex((v.us / 1000) << 16 | 28672 | v.us % 1000), 16, '0') ||
            lpad(to_hex(v.low & 4611686018427387903 | -9223372036854775808), 16, '0'))::uuid
    FROM (SELECT (extract(epoch FROM created_at) * 1000000)::bigint AS us,
                 ('x' || right(replace(id::text, '-', ''), 16))::bit(64)::bigint AS low) v
$$;

CREATE TABLE {{schema}}.prompts (
    organization_id       uuid NOT NULL,
    id                    uuid NOT NULL DEFAULT {{schema}}.prompts_row_id(now(), gen_random_uuid()),
    request_id            text NOT NULL CHECK (length(request_id) BETWEEN 1 AND 128),
    api_key_id            uuid,
    endpoint              text NOT NULL DEFAULT '',
    model                 text NOT NULL,
    prompt_text           text,
    response              text,
    prompt_tokens         integer NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens     integer NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    usage_tokens          integer NOT NULL DEFAULT 0 CHECK (usage_tokens >= 0),
    usage_source          text NOT NULL DEFAULT 'none' CHECK (usage_source IN ('upstream', 'estimated', 'none')),
    status                integer NOT NULL,
    latency_ms            integer NOT NULL DEFAULT 0,
    stream                boolean NOT NULL DEFAULT false,
    created_at            timestamptz NOT NULL DEFAULT now(),
    prompt_sealed         bytea,
    response_sealed       bytea,
    upstream              text,
    attempts              smallint NOT NULL DEFAULT 0,
    cache_creation_tokens integer NOT NULL DEFAULT 0,
    cache_read_tokens     integer NOT NULL DEFAULT 0,
    CONSTRAINT prompts_pkey PRIMARY KEY (organization_id, created_at, id)
) PARTITION BY RANGE (created_at);
ALTER TABLE {{schema}}.prompts ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON {{schema}}.prompts USING ({{isolation}}) WITH CHECK ({{isolation}});
REVOKE ALL ON {{schema}}.prompts FROM PUBLIC;
GRANT SELECT, INSERT ON {{schema}}.prompts TO {{app}};

CREATE TABLE {{schema}}.prompts_default PARTITION OF {{schema}}.prompts DEFAULT;
ALTER TABLE {{schema}}.prompts_default ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON {{schema}}.prompts_default USING ({{isolation}}) WITH CHECK ({{isolation}});
REVOKE ALL ON {{schema}}.prompts_default FROM PUBLIC;

CREATE TABLE {{schema}}.usage_hourly (
    organization_id   uuid NOT NULL,
    hour              timestamptz NOT NULL,
    model             text NOT NULL,
    api_key_id        uuid,
    requests          bigint NOT NULL,
    errors            bigint NOT NULL,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    usage_tokens      bigint NOT NULL,
    latency_ms        bigint NOT NULL
);
CREATE UNIQUE INDEX usage_hourly_key ON {{schema}}.usage_hourly (organization_id, hour, model, api_key_id) NULLS NOT DISTINCT;
ALTER TABLE {{schema}}.usage_hourly ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON {{schema}}.usage_hourly USING ({{isolation}}) WITH CHECK ({{isolation}});
REVOKE ALL ON {{schema}}.usage_hourly FROM PUBLIC;
GRANT SELECT ON {{schema}}.usage_hourly TO {{app}};

-- A statement's rows must all be the tenant's (and, in a tenant schema,
-- the schema's organization's, whatever the context): the policies
-- already refuse others to the app role; this holds the owner too.
-- +goose StatementBegin
CREATE FUNCTION {{schema}}.prompts_check_references() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tenant uuid := NULLIF(current_setting('app.current_tenant_id', true), '')::uuid;
    pinned uuid := NULLIF('{{org}}', '')::uuid;
BEGIN
    IF EXISTS (SELECT FROM new_rows n WHERE n.organization_id <> coalesce(tenant, n.organization_id)
                                          OR n.organization_id <> coalesce(pinned, n.organization_id)) THEN
        RAISE EXCEPTION 'insert on table "prompts" names an organization other than the current tenant'
            USING ERRCODE = 'insufficient_privilege', TABLE = 'prompts';
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION {{schema}}.prompts_check_references() FROM PUBLIC;
CREATE TRIGGER prompts_check_references
    AFTER INSERT ON {{schema}}.prompts REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.prompts_check_references();

-- +goose StatementBegin
CREATE FUNCTION {{schema}}.prompts_rollup() RETURNS trigger
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
REVOKE ALL ON FUNCTION {{schema}}.prompts_rollup() FROM PUBLIC;
CREATE TRIGGER prompts_rollup
    AFTER INSERT ON {{schema}}.prompts REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.prompts_rollup();

-- The day partitions, as public.prompts_create_partitions (00009) makes
-- them: each with forced RLS, the parent's one policy, no grant.
-- +goose StatementBegin
CREATE FUNCTION {{schema}}.prompts_create_partitions(days_ahead integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    d date;
    i integer;
    lo timestamptz;
    hi timestamptz;
    part text;
    created integer := 0;
    isolation constant text := $iso${{isolation}}$iso$;
BEGIN
    IF NULLIF(current_setting('app.current_tenant_id', true), '') IS NOT NULL THEN
        RAISE EXCEPTION 'prompts_create_partitions runs outside any tenant context'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('bulkhead.prompts_create_partitions.{{schema}}'));
    FOR i IN -1 .. least(greatest(days_ahead, 1), 60) LOOP
        d := today + i;
        part := 'prompts_' || to_char(d, 'YYYYMMDD');
        CONTINUE WHEN to_regclass('{{schema}}.' || part) IS NOT NULL;
        lo := d::timestamp AT TIME ZONE 'UTC';
        hi := (d + 1)::timestamp AT TIME ZONE 'UTC';
        IF EXISTS (SELECT FROM {{schema}}.prompts_default WHERE created_at >= lo AND created_at < hi) THEN
            EXECUTE format('CREATE TABLE {{schema}}.%I (LIKE {{schema}}.prompts INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
            EXECUTE format('WITH moved AS (DELETE FROM {{schema}}.prompts_default WHERE created_at >= %L AND created_at < %L RETURNING *)
                            INSERT INTO {{schema}}.%I SELECT * FROM moved', lo, hi, part);
            EXECUTE format('ALTER TABLE {{schema}}.prompts ATTACH PARTITION {{schema}}.%I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
        ELSE
            EXECUTE format('CREATE TABLE {{schema}}.%I PARTITION OF {{schema}}.prompts FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
        END IF;
        EXECUTE format('ALTER TABLE {{schema}}.%I ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY', part);
        EXECUTE format('CREATE POLICY tenant_isolation ON {{schema}}.%I USING (%s) WITH CHECK (%s)', part, isolation, isolation);
        EXECUTE format('REVOKE ALL ON {{schema}}.%I FROM PUBLIC', part);
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION {{schema}}.prompts_create_partitions(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {{schema}}.prompts_create_partitions(integer) TO {{app}};
SELECT {{schema}}.prompts_create_partitions(14);

GRANT USAGE ON SCHEMA {{schema}} TO {{app}};

-- +goose Down
DROP TABLE {{schema}}.usage_hourly;
DROP TABLE {{schema}}.prompts;
DROP FUNCTION {{schema}}.prompts_create_partitions(integer);
DROP FUNCTION {{schema}}.prompts_rollup();
DROP FUNCTION {{schema}}.prompts_check_references();
DROP FUNCTION {{schema}}.prompts_row_id(timestamptz, uuid);
