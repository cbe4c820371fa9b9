-- Bootstrap of the compose PostgreSQL, the container twin of
-- deploy/dev/services.sh. The postgres image runs this once, as the
-- superuser, when its data volume is empty (`docker compose down -v` resets).
--
--   bulkhead_owner  LOGIN BYPASSRLS: owns the databases and, after
--                   `bulkhead migrate`, every table
--   bulkhead_app    LOGIN NOSUPERUSER NOBYPASSRLS: the running gateway; owns
--                   nothing, gets only the grants the migrations give it
--   databases       bulkhead (compose's gateway), bulkhead_test (go test) and
--                   bulkhead_test_t1, bulkhead_test_t2 (go test's database
--                   targets of tenant placement)
--
-- The passwords are development-only and match config's defaults. In
-- production your DBA runs the same statements with real secrets.

CREATE ROLE bulkhead_owner LOGIN PASSWORD 'bulkhead' NOSUPERUSER BYPASSRLS NOCREATEROLE NOCREATEDB;
CREATE ROLE bulkhead_app LOGIN PASSWORD 'bulkhead' NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB;

CREATE DATABASE bulkhead OWNER bulkhead_owner;
CREATE DATABASE bulkhead_test OWNER bulkhead_owner;
CREATE DATABASE bulkhead_test_t1 OWNER bulkhead_owner;
CREATE DATABASE bulkhead_test_t2 OWNER bulkhead_owner;

\connect bulkhead
REVOKE ALL ON DATABASE bulkhead FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE bulkhead TO bulkhead_app;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO bulkhead_app;

\connect bulkhead_test
REVOKE ALL ON DATABASE bulkhead_test FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE bulkhead_test TO bulkhead_app;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO bulkhead_app;

\connect bulkhead_test_t1
REVOKE ALL ON DATABASE bulkhead_test_t1 FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE bulkhead_test_t1 TO bulkhead_app;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO bulkhead_app;

\connect bulkhead_test_t2
REVOKE ALL ON DATABASE bulkhead_test_t2 FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE bulkhead_test_t2 TO bulkhead_app;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO bulkhead_app;
