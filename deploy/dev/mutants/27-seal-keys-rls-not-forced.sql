-- organization_keys: RLS not forced (the owner-side policy no longer holds the table to the tenant in context)
-- tests: ./store TestCatalog
ALTER TABLE organization_keys NO FORCE ROW LEVEL SECURITY;
