-- the app role may read the operators' token hashes
-- tests: ./store TestCatalog
GRANT SELECT ON admin_tokens TO bulkhead_app;
