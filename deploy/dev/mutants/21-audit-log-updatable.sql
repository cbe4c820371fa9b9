-- audit_log rows can be updated (the row trigger refuses DELETE only)
-- tests: ./store TestAuditLogAppendOnly
DROP TRIGGER audit_log_no_update ON audit_log;
CREATE TRIGGER audit_log_no_update BEFORE DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
