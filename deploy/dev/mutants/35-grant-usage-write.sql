-- the app role may write usage rollups itself (forge or erase its tenant's usage)
-- tests: ./store TestCatalog|TestCrossTenantWritesRejected
GRANT INSERT, UPDATE, DELETE ON usage_hourly TO bulkhead_app;
