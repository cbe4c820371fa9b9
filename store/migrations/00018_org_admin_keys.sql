-- +goose Up
-- Organization-scoped admin keys: a tenant administrator's credential
-- other than a JWT, made by an operator (POST
-- /admin/v1/organizations/{id}/admin-keys), revocable, one organization's
-- each. It authorizes exactly what a tenant administrator's JWT does, and
-- through the same path (store.TenantAdmin: the app role inside the
-- organization's tenant context). Only the key's SHA-256 is stored. The
-- key names its organization (bhk_<org>_<secret>, like an API key), and the
-- control plane looks it up as the app role inside that organization's
-- context: RLS alone keeps a key from resolving in another organization.
-- The app role only reads them; operators (the owner role) write them.
CREATE TABLE org_admin_keys (
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id              uuid NOT NULL DEFAULT gen_random_uuid(),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    key_hash        bytea NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    display_prefix  text NOT NULL CHECK (length(display_prefix) BETWEEN 1 AND 64),
    expires_at      timestamptz,
    revoked_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id)
);
CREATE UNIQUE INDEX org_admin_keys_id ON org_admin_keys (id);
ALTER TABLE org_admin_keys ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON org_admin_keys
    USING (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid))
    WITH CHECK (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid));
REVOKE ALL ON org_admin_keys FROM PUBLIC;
GRANT SELECT ON org_admin_keys TO bulkhead_app;

-- +goose Down
DROP TABLE org_admin_keys;
