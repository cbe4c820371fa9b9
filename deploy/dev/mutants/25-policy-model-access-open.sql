-- model_access's policy shows every organization's grants and revocations
-- tests: ./store TestCatalog|TestCatalogIsolation
DROP POLICY tenant_isolation ON model_access;
CREATE POLICY tenant_isolation ON model_access USING (true)
    WITH CHECK (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid));
