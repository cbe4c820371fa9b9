-- models' policy reads every tenant's private models (shared or not), writes stay checked
-- tests: ./store TestCatalog|TestCatalogIsolation
DROP POLICY tenant_isolation ON models;
CREATE POLICY tenant_isolation ON models USING ((SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid) IS NOT NULL)
    WITH CHECK (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid));
