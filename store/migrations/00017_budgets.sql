-- CONTROL PLANE: dollar budgets (issue 15).
--
--   * budgets: a limit in micro-USD per organization (api_key_id and
--     end_user NULL), per key, per end user, or per key and end user, over
--     a window: a UTC calendar day or month, or a rolling duration. Its
--     alert thresholds are per-mille of the limit (800 = 80%). One budget
--     per (organization, key, end user). The operator writes them (bulkhead
--     budget set|remove, audited); the gateway reads them as the app role
--     within the tenant's context.
--   * budget_alerts: the soft thresholds already announced, one row per
--     (budget, window, threshold). The gateway inserts a row before it
--     sends the webhook, ON CONFLICT DO NOTHING: whichever replica
--     inserts it sends it, so each fires at most once per window.
--
-- PostgreSQL is the source of truth for spend: the prompts rows' costs
-- (data-plane migration 00002). Redis only holds the running counters, rebuilt from the rows.

-- +goose Up
CREATE TABLE budgets (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    api_key_id      uuid,
    end_user        text CHECK (length(end_user) BETWEEN 1 AND 256),
    limit_micros    bigint NOT NULL CHECK (limit_micros > 0 AND limit_micros <= 1000000000000000),
    window_kind     text NOT NULL CHECK (window_kind IN ('day', 'month', 'rolling')),
    rolling_seconds integer CHECK ((window_kind = 'rolling') = (rolling_seconds IS NOT NULL)
                                   AND (rolling_seconds IS NULL OR rolling_seconds BETWEEN 60 AND 31622400)),
    alert_permille  smallint[] NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, api_key_id) REFERENCES api_keys (organization_id, id) ON DELETE CASCADE,
    UNIQUE (organization_id, id) -- the target of budget_alerts' composite key
);
CREATE UNIQUE INDEX budgets_scope ON budgets (organization_id, api_key_id, end_user) NULLS NOT DISTINCT;

CREATE TABLE budget_alerts (
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    budget_id       uuid NOT NULL,
    window_start    timestamptz NOT NULL,
    permille        smallint NOT NULL,
    fired_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, budget_id, window_start, permille),
    -- composite: a row can name only its own organization's budget
    FOREIGN KEY (organization_id, budget_id) REFERENCES budgets (organization_id, id) ON DELETE CASCADE
);

ALTER TABLE budgets ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON budgets
    USING (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid))
    WITH CHECK (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid));
ALTER TABLE budget_alerts ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON budget_alerts
    USING (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid))
    WITH CHECK (organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid));

REVOKE ALL ON budgets, budget_alerts FROM PUBLIC;
GRANT SELECT ON budgets TO bulkhead_app;
GRANT SELECT, INSERT ON budget_alerts TO bulkhead_app;

-- +goose Down
DROP TABLE budget_alerts;
DROP TABLE budgets;
