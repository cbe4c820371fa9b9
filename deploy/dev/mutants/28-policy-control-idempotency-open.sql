-- control_idempotency's policy lets every tenant read every tenant's remembered creates
-- tests: ./store TestCatalog
DROP POLICY tenant_isolation ON control_idempotency;
CREATE POLICY tenant_isolation ON control_idempotency USING (true) WITH CHECK (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid));
