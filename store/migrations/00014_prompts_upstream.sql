-- The upstream that answered each request and the attempts it took
-- (issue 18: fallbacks and retries). Both are metadata, kept in every
-- capture mode.
--
-- Adding a nullable column, or one with a constant default, changes only
-- the catalog (no rewrite of prompts' partitions). Gateways older than this
-- migration keep working after it (they leave both columns to their
-- defaults); gateways from this version on write them, so migrate first,
-- then roll the gateways.

-- +goose Up
ALTER TABLE prompts
    ADD COLUMN upstream text,
    ADD COLUMN attempts smallint NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE prompts
    DROP COLUMN attempts,
    DROP COLUMN upstream;
