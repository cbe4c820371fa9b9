-- organizations' policy reads every row (USING (true)), writes stay checked
-- tests: ./store TestCatalog|TestTenantSeesOnlyItsRows|TestNoContextSeesNothing
DROP POLICY tenant_isolation ON organizations;
CREATE POLICY tenant_isolation ON organizations USING (true) WITH CHECK (id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid));
