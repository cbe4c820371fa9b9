-- audit_log can be truncated (its TRUNCATE trigger is gone)
-- tests: ./store TestAuditLogAppendOnly
DROP TRIGGER audit_log_no_truncate ON audit_log;
