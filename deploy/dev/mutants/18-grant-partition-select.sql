-- the app role may read a partition of prompts directly, past the parent's policy
-- tests: ./store TestCatalog
GRANT SELECT ON prompts_legacy TO bulkhead_app;
