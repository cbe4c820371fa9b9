-- prompts_check_references (00003) runs as the table owner and named its
-- tables unqualified with search_path "pg_catalog, public". A schema list
-- without pg_temp searches the session's temporary tables first, and the
-- app role may create them: a decoy pg_temp.api_keys holding another
-- tenant's key id let a row point into that tenant
-- (TestPromptReferences, "temporary decoy tables"). pg_temp goes last.

-- +goose Up
ALTER FUNCTION prompts_check_references() SET search_path = pg_catalog, public, pg_temp;

-- +goose Down
ALTER FUNCTION prompts_check_references() SET search_path = pg_catalog, public;
