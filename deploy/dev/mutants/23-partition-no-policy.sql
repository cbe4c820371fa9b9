-- a partition of prompts has no policy: THREATS 2 wants at least one on every table holding tenant rows
-- tests: ./store TestCatalog
DROP POLICY tenant_isolation ON prompts_legacy;
