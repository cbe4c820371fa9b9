-- api_keys' row-level security is disabled
-- tests: ./store TestCatalog|TestTenantSeesOnlyItsRows|TestNoContextSeesNothing
ALTER TABLE api_keys DISABLE ROW LEVEL SECURITY;
