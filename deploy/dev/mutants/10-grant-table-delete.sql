-- the app role may delete request-log rows
-- tests: ./store TestCatalog
GRANT DELETE ON prompts TO bulkhead_app;
