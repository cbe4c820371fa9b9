-- The model catalog and per-tenant model access (issue 15).
--
--   * models: shared rows (organization_id IS NULL), which the operator
--     manages for every tenant, and tenant rows (a tenant's private models:
--     fine-tunes, aliases). Each names the configured upstream that serves
--     it (credentials stay in the configuration) and its prices in
--     micro-US-dollars per million tokens, exact integers. A tenant's own
--     model named like a shared one replaces the shared one for that
--     tenant only (README: Tenancy).
--   * model_access: which shared models an organization may use; allowed
--     true (granted) or false (revoked). Without a row,
--     BULKHEAD_MODEL_ACCESS_DEFAULT decides.
--
-- RLS: a tenant reads the shared rows and its own, and nothing without a
-- tenant context (coalesce turns a shared row's NULL into the tenant, and
-- a missing tenant into NULL, which matches nothing). Only the owner
-- writes: the app role has SELECT alone.

-- +goose Up
CREATE TABLE models (
    id                        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id           uuid REFERENCES organizations (id) ON DELETE CASCADE,
    name                      text NOT NULL CHECK (length(name) BETWEEN 1 AND 256),
    upstream                  text NOT NULL CHECK (length(upstream) BETWEEN 1 AND 200),
    -- micro-USD per million tokens: 150000 is $0.15 per million. At most
    -- $100,000 per million tokens, far above any price, far below bigint.
    input_price_micros        bigint NOT NULL CHECK (input_price_micros BETWEEN 0 AND 100000000000),
    cached_input_price_micros bigint NOT NULL CHECK (cached_input_price_micros BETWEEN 0 AND 100000000000),
    output_price_micros       bigint NOT NULL CHECK (output_price_micros BETWEEN 0 AND 100000000000),
    enabled                   boolean NOT NULL DEFAULT true,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX models_shared_name ON models (name) WHERE organization_id IS NULL;
CREATE UNIQUE INDEX models_tenant_name ON models (organization_id, name) WHERE organization_id IS NOT NULL;

CREATE TABLE model_access (
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    model_id        uuid NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    allowed         boolean NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, model_id)
);
CREATE INDEX model_access_model ON model_access (model_id);

ALTER TABLE models ENABLE ROW LEVEL SECURITY;
ALTER TABLE models FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON models
    USING (coalesce(organization_id, (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid))
           = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid))
    WITH CHECK (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid));

ALTER TABLE model_access ENABLE ROW LEVEL SECURITY;
ALTER TABLE model_access FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON model_access
    USING (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid))
    WITH CHECK (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid));

REVOKE ALL ON models, model_access FROM PUBLIC;
GRANT SELECT ON models TO bulkhead_app;
GRANT SELECT ON model_access TO bulkhead_app;

-- +goose Down
DROP TABLE model_access;
DROP TABLE models;
