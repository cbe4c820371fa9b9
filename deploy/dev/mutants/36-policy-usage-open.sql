-- usage_hourly's policy lets every tenant read every tenant's usage
-- tests: ./store TestCatalog|TestTenantSeesOnlyItsRows
DROP POLICY tenant_isolation ON usage_hourly;
CREATE POLICY tenant_isolation ON usage_hourly USING (true) WITH CHECK (true);
