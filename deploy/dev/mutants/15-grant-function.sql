-- the app role may execute the owner's SECURITY DEFINER trigger function
-- tests: ./store TestCatalog
GRANT EXECUTE ON FUNCTION prompts_check_references() TO bulkhead_app;
