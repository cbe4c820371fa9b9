-- prompts' row-level security is no longer forced (the owner's own statements skip it)
-- tests: ./store TestCatalog
ALTER TABLE prompts NO FORCE ROW LEVEL SECURITY;
