-- Tenant placement (issue 14): where an organization's data plane lives.
--
--   * organizations.placement: 'shared' (the tables of this schema, as
--     before), 'schema' (the same tables in a schema of its own in this
--     database, named t_ and the 32 hex digits of its id: see
--     store/placement.go) or 'database:NAME' (a database target that the
--     configuration names: database_targets). Control-plane data: the app
--     role reads it (it routes the request log and the read API by it) and
--     cannot change it.
--
-- The data-plane tables themselves (prompts, usage_hourly) are migrated in
-- every place by the second migration set, store/migrations/data.

-- +goose Up
ALTER TABLE organizations ADD COLUMN placement text NOT NULL DEFAULT 'shared'
    CONSTRAINT organizations_placement_check
    CHECK (placement IN ('shared', 'schema') OR placement ~ '^database:[a-z][a-z0-9_]{0,39}$');

-- +goose Down
ALTER TABLE organizations DROP COLUMN IF EXISTS placement;
