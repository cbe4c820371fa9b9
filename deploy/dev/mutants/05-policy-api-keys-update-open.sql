-- api_keys gets a permissive UPDATE policy: the app role's last_used_at stamp reaches every tenant's keys
-- tests: ./store TestCatalog|TestRLSConfinesUpdates
CREATE POLICY stamp_any_key ON api_keys FOR UPDATE USING (true) WITH CHECK (true);
