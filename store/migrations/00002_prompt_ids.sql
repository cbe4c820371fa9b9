-- A caller may send the same x-request-id twice (a constant, a retry):
-- both requests must be recorded. The request log's idempotency key for
-- replays is therefore the row id, which the gateway assigns once per
-- request, no longer (organization_id, request_id). One index fewer on the
-- hottest table, too.

-- +goose Up
ALTER TABLE prompts DROP CONSTRAINT prompts_organization_id_request_id_key;

-- +goose Down
ALTER TABLE prompts ADD CONSTRAINT prompts_organization_id_request_id_key UNIQUE (organization_id, request_id);
