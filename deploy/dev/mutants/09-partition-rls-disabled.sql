-- a partition of prompts has row-level security switched off: reached directly, it would show every tenant's rows
-- tests: ./store TestCatalog
ALTER TABLE prompts_default DISABLE ROW LEVEL SECURITY;
