-- a partition of prompts gets a policy of its own that opens it
-- tests: ./store TestCatalog
CREATE POLICY open ON prompts_default USING (true);
