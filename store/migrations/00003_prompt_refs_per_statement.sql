-- The request log's two foreign keys checked every inserted row with a
-- query of its own and locked the row's API key: about 5 µs of
-- PostgreSQL's CPU per row, a third of what a logged request cost it
-- (measured with bulkhead-bench's CPU columns). One trigger per statement
-- now enforces the same two rules over the whole batch:
--
--   * the organization exists, and is locked FOR KEY SHARE until the
--     transaction ends, as a foreign key locks it: a concurrent deletion
--     waits for the insert, then deletes its rows (DeleteOrg locks the
--     organization, then deletes its prompts, then the organization);
--   * a row's api_key_id, when set, is a key of the row's own
--     organization.
--
-- It raises foreign_key_violation, as the foreign keys did, so callers
-- classify the refusal as before. It runs as the table owner (SECURITY
-- DEFINER), as foreign-key checks do, since the app role may neither lock
-- organizations nor see another tenant's keys; it reads only the rows
-- the statement inserted. Deleting an organization's prompts is now
-- DeleteOrg's job instead of ON DELETE CASCADE.

-- +goose Up
ALTER TABLE prompts DROP CONSTRAINT prompts_organization_id_api_key_id_fkey;
ALTER TABLE prompts DROP CONSTRAINT prompts_organization_id_fkey;

-- +goose StatementBegin
CREATE FUNCTION prompts_check_references() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    orgs uuid[];
    locked int;
BEGIN
    SELECT array_agg(DISTINCT n.organization_id) INTO orgs FROM new_rows n;
    IF orgs IS NULL THEN
        RETURN NULL; -- nothing inserted (every row a conflict)
    END IF;
    SELECT count(*) INTO locked FROM (
        SELECT 1 FROM organizations o WHERE o.id = ANY (orgs) FOR KEY SHARE OF o) l;
    IF locked <> cardinality(orgs) THEN
        RAISE EXCEPTION 'insert on table "prompts" names an organization that does not exist'
            USING ERRCODE = 'foreign_key_violation', TABLE = 'prompts', CONSTRAINT = 'prompts_organization_ref';
    END IF;
    IF EXISTS (
        SELECT FROM (SELECT DISTINCT n.organization_id, n.api_key_id FROM new_rows n WHERE n.api_key_id IS NOT NULL) n
        WHERE NOT EXISTS (SELECT FROM api_keys k WHERE k.organization_id = n.organization_id AND k.id = n.api_key_id))
    THEN
        RAISE EXCEPTION 'insert on table "prompts" names an API key that is not its organization''s'
            USING ERRCODE = 'foreign_key_violation', TABLE = 'prompts', CONSTRAINT = 'prompts_api_key_ref';
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION prompts_check_references() FROM PUBLIC;

CREATE TRIGGER prompts_check_references
    AFTER INSERT ON prompts REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION prompts_check_references();

-- +goose Down
DROP TRIGGER prompts_check_references ON prompts;
DROP FUNCTION prompts_check_references();
ALTER TABLE prompts ADD FOREIGN KEY (organization_id) REFERENCES organizations (id) ON DELETE CASCADE;
ALTER TABLE prompts ADD FOREIGN KEY (organization_id, api_key_id) REFERENCES api_keys (organization_id, id);
