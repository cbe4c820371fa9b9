-- prompts' policy opens every row when no tenant is set (the IS NULL OR mistake)
-- tests: ./store TestCatalog|TestNoContextSeesNothing
DROP POLICY tenant_isolation ON prompts;
CREATE POLICY tenant_isolation ON prompts
    USING (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid) OR (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid) IS NULL)
    WITH CHECK (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid));
