-- the app role may update audit rows (the trigger still refuses, but the privilege is there)
-- tests: ./store TestAuditLogAppendOnly|TestCatalog
GRANT UPDATE ON audit_log TO bulkhead_app;
