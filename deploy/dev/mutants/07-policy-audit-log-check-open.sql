-- audit_log's policy checks nothing on insert (WITH CHECK (true)): a tenant writes another's audit rows
-- tests: ./store TestCatalog|TestCrossTenantWritesRejected|TestNoContextSeesNothing
DROP POLICY tenant_isolation ON audit_log;
CREATE POLICY tenant_isolation ON audit_log USING (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid)) WITH CHECK (true);
