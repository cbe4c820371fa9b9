-- the app role may create objects in the public schema
-- tests: ./store TestCatalog
GRANT CREATE ON SCHEMA public TO bulkhead_app;
