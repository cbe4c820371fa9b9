-- Sealing (issue 20): per-tenant envelope encryption of the request log's
-- free text, and crypto-shredding.
--
--   * organizations.sealed: the organization's prompt and response text is
--     stored as AEAD ciphertext (prompts.prompt_sealed, response_sealed)
--     instead of in clear (prompt_text, response). Set by the operator
--     (bulkhead org create|update --seal on|off). Rows keep the form they
--     were written in: switching it off leaves the sealed rows sealed.
--   * organization_keys: the organization's data keys (DEKs), one Tink
--     keyset per organization (each `org rekey` adds a key and makes it the
--     one new rows use; the older keys stay for the rows they sealed),
--     stored only encrypted by the key-encryption key (KEK), which never
--     reaches the database, with the organization's id as associated data:
--     a wrapped keyset copied to another organization's row does not
--     unwrap. kek_key_id names the KEK key that wrapped it (0 for a KMS),
--     so that `key-encryption rotate` can tell what is left to re-wrap.
--     A tenant table: forced RLS and the one policy. The app role may only
--     SELECT, inside the tenant's context: the request-log writer and the
--     read API unwrap the tenant's keyset in process, so the role must read
--     it, but it cannot create, replace or destroy one (a compromised
--     gateway cannot substitute a key it knows for a tenant's, nor shred
--     one); every change is the owner's (the operator's commands),
--     audited.
--   * seal_kek_check: one row, written by `bulkhead key-encryption init`
--     (and rotate): a constant sealed under the KEK. `bulkhead serve` reads
--     it at start: present and no KEK configured, or a KEK that cannot
--     open it, and the gateway refuses to start (it could neither seal new
--     rows nor read sealed ones). No tenant data: the app role may read it.

-- +goose Up
ALTER TABLE organizations ADD COLUMN sealed boolean NOT NULL DEFAULT false;

-- Adding nullable columns without a default changes only the catalog,
-- on the parent and on every partition.
ALTER TABLE prompts ADD COLUMN prompt_sealed bytea, ADD COLUMN response_sealed bytea;

CREATE TABLE organization_keys (
    organization_id uuid PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    keyset          bytea NOT NULL,
    kek_key_id      bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE organization_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE organization_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON organization_keys
    USING (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid))
    WITH CHECK (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid));
REVOKE ALL ON organization_keys FROM PUBLIC;
GRANT SELECT ON organization_keys TO bulkhead_app;

CREATE TABLE seal_kek_check (
    id         smallint PRIMARY KEY CHECK (id = 1),
    kek_key_id bigint NOT NULL,
    sealed     bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON seal_kek_check FROM PUBLIC;
GRANT SELECT ON seal_kek_check TO bulkhead_app;

-- +goose Down
DROP TABLE seal_kek_check;
DROP TABLE organization_keys;
ALTER TABLE prompts DROP COLUMN IF EXISTS response_sealed, DROP COLUMN IF EXISTS prompt_sealed;
ALTER TABLE organizations DROP COLUMN IF EXISTS sealed;
