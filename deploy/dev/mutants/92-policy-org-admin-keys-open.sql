-- org_admin_keys' policy lets every tenant context read every organization's admin keys
-- tests: ./store TestCatalog
DROP POLICY tenant_isolation ON org_admin_keys;
CREATE POLICY tenant_isolation ON org_admin_keys USING (true) WITH CHECK (true);
