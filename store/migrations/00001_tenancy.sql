-- Bulkhead's first schema: organizations, API keys, the prompt log and the
-- audit log, every tenant table under forced Row-Level Security.
--
-- Roles (created by deploy/dev/services.sh, or by your DBA in production):
--   bulkhead_owner  runs these migrations, owns every table, has BYPASSRLS
--                   for the operator's admin subcommands; never used by the
--                   running gateway.
--   bulkhead_app    the gateway's runtime role: NOSUPERUSER, NOBYPASSRLS,
--                   owns nothing, holds only the grants below. A differently
--                   named login role may be granted membership in it.
--
-- Tenant context: every tenant statement runs in a transaction that first
-- calls set_config('app.current_tenant_id', $1, true). Policies compare
-- against (SELECT NULLIF(current_setting(...), '')::uuid): the sub-select
-- makes it an InitPlan evaluated once per statement, NULLIF turns the ''
-- that a reused connection reports into NULL, and NULL matches no row.

-- +goose Up
-- +goose StatementBegin
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bulkhead_app') THEN
    RAISE EXCEPTION 'role bulkhead_app does not exist: create it first (deploy/dev/services.sh does)';
  END IF;
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'bulkhead_app' AND (rolsuper OR rolbypassrls)) THEN
    RAISE EXCEPTION 'role bulkhead_app must be NOSUPERUSER NOBYPASSRLS';
  END IF;
END
$$;
-- +goose StatementEnd

CREATE TABLE organizations (
    id           uuid PRIMARY KEY,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    capture_mode text NOT NULL DEFAULT 'full' CHECK (capture_mode IN ('full', 'metadata')),
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    organization_id       uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id                    uuid NOT NULL DEFAULT gen_random_uuid(),
    key_hash              bytea NOT NULL CHECK (length(key_hash) = 32),
    display_prefix        text NOT NULL,
    name                  text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    rate_limit_per_minute integer NOT NULL CHECK (rate_limit_per_minute >= 0),
    tokens_per_minute     integer CHECK (tokens_per_minute >= 0),
    expires_at            timestamptz,
    revoked_at            timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    last_used_at          timestamptz,
    PRIMARY KEY (organization_id, id)
);
-- The authentication look-up: key_hash within the key's own organization
-- (RLS adds the organization; the index leads with it, as all ours do).
CREATE UNIQUE INDEX api_keys_org_key_hash ON api_keys (organization_id, key_hash);

CREATE TABLE prompts (
    organization_id   uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id                uuid NOT NULL DEFAULT gen_random_uuid(),
    request_id        text NOT NULL CHECK (length(request_id) BETWEEN 1 AND 128),
    api_key_id        uuid,
    endpoint          text NOT NULL DEFAULT '',
    model             text NOT NULL,
    prompt_text       text,
    response          text,
    prompt_tokens     integer NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens integer NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    usage_tokens      integer NOT NULL DEFAULT 0 CHECK (usage_tokens >= 0),
    usage_source      text NOT NULL DEFAULT 'none' CHECK (usage_source IN ('upstream', 'estimated', 'none')),
    status            integer NOT NULL,
    latency_ms        integer NOT NULL DEFAULT 0,
    stream            boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id),
    UNIQUE (organization_id, request_id),
    -- Composite: a prompt can only point at a key of its own organization.
    -- Keys are revoked, not deleted; an organization's deletion removes both.
    FOREIGN KEY (organization_id, api_key_id) REFERENCES api_keys (organization_id, id)
);
CREATE INDEX prompts_org_created ON prompts (organization_id, created_at DESC, id DESC);

-- Append-only. No foreign key: the row recording an organization's
-- deletion must outlive the organization.
CREATE TABLE audit_log (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id uuid,
    actor           text NOT NULL,
    action          text NOT NULL,
    target          text NOT NULL DEFAULT '',
    details         jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_org_created ON audit_log (organization_id, created_at DESC);

-- +goose StatementBegin
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;
-- +goose StatementEnd
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- Row-Level Security, forced so that the owner is subject to it as well
-- (it escapes only through its explicit BYPASSRLS attribute).
ALTER TABLE organizations ENABLE ROW LEVEL SECURITY;
ALTER TABLE organizations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON organizations
    USING (id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid))
    WITH CHECK (id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid));

ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_keys
    USING (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid))
    WITH CHECK (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid));

ALTER TABLE prompts ENABLE ROW LEVEL SECURITY;
ALTER TABLE prompts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON prompts
    USING (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid))
    WITH CHECK (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid));

ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_log
    USING (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid))
    WITH CHECK (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid));

-- The runtime role gets exactly what the gateway does, nothing more:
-- read its organization and keys, stamp last use, append prompts and audit
-- rows. No UPDATE of anything else, no DELETE, no TRUNCATE.
REVOKE ALL ON organizations, api_keys, prompts, audit_log FROM PUBLIC;
GRANT SELECT ON organizations TO bulkhead_app;
GRANT SELECT ON api_keys TO bulkhead_app;
GRANT UPDATE (last_used_at) ON api_keys TO bulkhead_app;
GRANT SELECT, INSERT ON prompts TO bulkhead_app;
GRANT INSERT ON audit_log TO bulkhead_app;

-- +goose Down
DROP TABLE audit_log;
DROP FUNCTION audit_log_append_only();
DROP TABLE prompts;
DROP TABLE api_keys;
DROP TABLE organizations;
