-- The upstream that answered each request and the attempts it took
-- (issue 18: fallbacks and retries), and the prompt tokens Anthropic
-- reports as written to and read from its prompt cache (counted inside
-- prompt_tokens too). All are metadata, kept in every capture mode.
--
-- Adding a nullable column, or one with a constant default, changes only
-- the catalog (no rewrite of prompts' partitions). Gateways older than this
-- migration keep working after it (they leave both columns to their
-- defaults); gateways from this version on write them, so migrate first,
-- then roll the gateways.

-- +goose Up
ALTER TABLE prompts
    ADD COLUMN upstream text,
    ADD COLUMN attempts smallint NOT NULL DEFAULT 0,
    ADD COLUMN cache_creation_tokens integer NOT NULL DEFAULT 0,
    ADD COLUMN cache_read_tokens integer NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE prompts
    DROP COLUMN cache_read_tokens,
    DROP COLUMN cache_creation_tokens,
    DROP COLUMN attempts,
    DROP COLUMN upstream;
