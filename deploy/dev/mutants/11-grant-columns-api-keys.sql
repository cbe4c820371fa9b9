-- the app role may update a key's revocation and limit (column grants)
-- tests: ./store TestCatalog
GRANT UPDATE (revoked_at, rate_limit_per_minute) ON api_keys TO bulkhead_app;
