-- the app role may rewrite a key's hash or move it to another organization (column grants)
-- tests: ./store TestCatalog
GRANT UPDATE (key_hash, organization_id) ON api_keys TO bulkhead_app;
