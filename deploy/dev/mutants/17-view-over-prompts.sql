-- a view over prompts, running as its owner (who bypasses RLS), readable by the app role
-- tests: ./store TestCatalog
CREATE VIEW recent_prompts AS SELECT organization_id, id, model, created_at FROM prompts;
GRANT SELECT ON recent_prompts TO bulkhead_app;
