-- The control plane (gateway/control): operator tokens, idempotent
-- creates, and what a tenant administrator may do to its own keys.
--
-- admin_tokens are the operators' bearer tokens for the admin API. Only
-- their SHA-256 is stored. They are installation-wide, not tenant rows:
-- the owner role reads them (the control plane's operator path), the app
-- role gets nothing on them.
--
-- control_idempotency remembers the first answer to a create sent with an
-- Idempotency-Key, per actor, so that a retried sign-up returns the
-- organization (or key, without its secret) it created the first time.
-- It is a tenant table like the others: forced RLS, the one policy, and
-- the app role reads and appends its own organization's rows (a tenant
-- administrator's key creates run as the app role inside the tenant's
-- context). The actor text names the organization for tenant
-- administrators, so keys never collide across tenants.
--
-- A tenant administrator manages its own organization's keys as the app
-- role, inside its tenant context: RLS, not the API's code, keeps it to
-- its own keys. That needs INSERT on api_keys and UPDATE of the columns a
-- key's create, limits, rotation and revocation change; never key_hash,
-- organization_id or id, and still no DELETE.

-- +goose Up
CREATE TABLE admin_tokens (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    scope      text NOT NULL CHECK (scope IN ('read', 'write')),
    token_hash bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    expires_at timestamptz,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON admin_tokens FROM PUBLIC;

CREATE TABLE control_idempotency (
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    actor           text NOT NULL CHECK (length(actor) BETWEEN 1 AND 300),
    idempotency_key text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    request_hash    bytea NOT NULL CHECK (length(request_hash) = 32),
    response        jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (actor, idempotency_key)
);
CREATE INDEX control_idempotency_org ON control_idempotency (organization_id);

ALTER TABLE control_idempotency ENABLE ROW LEVEL SECURITY;
ALTER TABLE control_idempotency FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON control_idempotency
    USING (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid))
    WITH CHECK (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid));
REVOKE ALL ON control_idempotency FROM PUBLIC;
GRANT SELECT, INSERT ON control_idempotency TO bulkhead_app;

-- The operator's organization list pages by (created_at, id).
CREATE INDEX organizations_created ON organizations (created_at, id);

GRANT INSERT (organization_id, key_hash, display_prefix, name, rate_limit_per_minute, tokens_per_minute, expires_at)
    ON api_keys TO bulkhead_app;
GRANT UPDATE (rate_limit_per_minute, tokens_per_minute, expires_at, revoked_at) ON api_keys TO bulkhead_app;

-- +goose Down
REVOKE UPDATE (rate_limit_per_minute, tokens_per_minute, expires_at, revoked_at) ON api_keys FROM bulkhead_app;
REVOKE INSERT (organization_id, key_hash, display_prefix, name, rate_limit_per_minute, tokens_per_minute, expires_at)
    ON api_keys FROM bulkhead_app;
DROP INDEX organizations_created;
DROP TABLE control_idempotency;
DROP TABLE admin_tokens;
