-- The complete prompts_check_references (00003, 00005), with the internal
-- tenant check that THREATS 5 asks of every SECURITY DEFINER function:
-- inside a tenant transaction, the rows it vouches for must all be that
-- tenant's. Row-level security's WITH CHECK already refuses any other row
-- before this trigger runs; the check keeps the function safe should a
-- policy ever be loosened.

-- +goose Up
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION prompts_check_references() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    orgs uuid[];
    tenant uuid := NULLIF(current_setting('app.current_tenant_id', true), '')::uuid;
    locked int;
BEGIN
    SELECT array_agg(DISTINCT n.organization_id) INTO orgs FROM new_rows n;
    IF orgs IS NULL THEN
        RETURN NULL; -- nothing inserted (every row a conflict)
    END IF;
    IF tenant IS NOT NULL AND orgs <> ARRAY[tenant] THEN
        RAISE EXCEPTION 'insert on table "prompts" names an organization other than the current tenant'
            USING ERRCODE = 'insufficient_privilege', TABLE = 'prompts';
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

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION prompts_check_references() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    orgs uuid[];
    locked int;
BEGIN
    SELECT array_agg(DISTINCT n.organization_id) INTO orgs FROM new_rows n;
    IF orgs IS NULL THEN
        RETURN NULL;
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
