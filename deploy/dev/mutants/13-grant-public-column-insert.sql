-- PUBLIC may insert organizations (a column grant reached through PUBLIC)
-- tests: ./store TestCatalog
GRANT INSERT (id, name) ON organizations TO PUBLIC;
