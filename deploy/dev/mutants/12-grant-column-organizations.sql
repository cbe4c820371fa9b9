-- the app role may change an organization's capture mode (column grant)
-- tests: ./store TestCatalog
GRANT UPDATE (capture_mode) ON organizations TO bulkhead_app;
