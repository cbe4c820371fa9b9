-- the app role may use and set audit_log's identity sequence
-- tests: ./store TestCatalog
GRANT USAGE, UPDATE ON SEQUENCE audit_log_id_seq TO bulkhead_app;
