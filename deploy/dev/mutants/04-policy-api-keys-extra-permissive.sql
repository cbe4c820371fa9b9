-- api_keys gets a second, permissive policy for SELECT (policies are OR-ed)
-- tests: ./store TestCatalog|TestTenantSeesOnlyItsRows
CREATE POLICY operators_read ON api_keys FOR SELECT USING (true);
