-- Moving an organization between placements (issue 14, `bulkhead org
-- move`): the state of a move in progress, on the organization's own row
-- (store/move.go has the state machine).
--
--   * move_from, move_to: the placements a move goes from and to; NULL
--     when no move is in progress.
--   * move_step: 'hold' (the writers park the organization's new records,
--     durable in their spool, instead of writing them), 'copy' (its rows
--     are being copied to move_to), 'copied' (copied and verified),
--     'cleanup' (placement is move_to: records and reads go there; the
--     rows left in move_from are being removed). NULL when no move is in
--     progress.
--
-- The app role reads them with the rest of its organization's row (the
-- writer parks while move_step is hold, copy or copied) and cannot change
-- them; only the owner's `bulkhead org move` does.

-- +goose Up
ALTER TABLE organizations
    ADD COLUMN move_from text,
    ADD COLUMN move_to text,
    ADD COLUMN move_step text,
    ADD CONSTRAINT organizations_move_check CHECK (
        (move_step IS NULL AND move_from IS NULL AND move_to IS NULL)
        OR (move_step IN ('hold', 'copy', 'copied', 'cleanup')
            AND (move_from IN ('shared', 'schema') OR move_from ~ '^database:[a-z][a-z0-9_]{0,39}$')
            AND (move_to IN ('shared', 'schema') OR move_to ~ '^database:[a-z][a-z0-9_]{0,39}$')
            AND move_from <> move_to));

-- +goose Down
ALTER TABLE organizations DROP CONSTRAINT IF EXISTS organizations_move_check,
    DROP COLUMN IF EXISTS move_step, DROP COLUMN IF EXISTS move_to, DROP COLUMN IF EXISTS move_from;
