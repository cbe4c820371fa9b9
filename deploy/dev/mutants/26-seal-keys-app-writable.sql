-- organization_keys: the app role may replace or destroy a tenant's wrapped data keys (key substitution, shredding by the gateway)
-- tests: ./store TestCatalog
GRANT INSERT, UPDATE, DELETE ON organization_keys TO bulkhead_app;
