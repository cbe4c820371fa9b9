#!/usr/bin/env bash
# Makes sure the local PostgreSQL and Redis that `make run` and `make test`
# use are installed, running and bootstrapped, and that PgBouncer is
# installed (the tests start their own, on a free loopback port, in front
# of that PostgreSQL; nothing here starts one). Idempotent: where everything
# already runs it only checks, and re-creating roles or databases is a no-op.
#
# On a Debian machine without them it installs the distribution packages
# (needs root) and starts them without systemd, so it also works in
# containers and CI sandboxes.
#
# Bootstrap (needs a PostgreSQL superuser, reached as the `postgres` OS user
# over the local socket, or as `postgres` over TCP where that is trusted):
#   role bulkhead_owner  LOGIN BYPASSRLS, owns the databases and the tables
#   role bulkhead_app    LOGIN NOSUPERUSER NOBYPASSRLS, owns nothing
#   databases bulkhead (for `make run`) and bulkhead_test (for `make test`),
#   and bulkhead_test_t1, bulkhead_test_t2: the database targets of the
#   placement tests (store/storetest/targets.go), with the same roles
# The passwords are development-only and match config's defaults.
set -euo pipefail

PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
REDIS_HOST=${REDIS_HOST:-127.0.0.1}
REDIS_PORT=${REDIS_PORT:-6379}
DEV_PASSWORD=bulkhead

log() { printf 'services: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root for: $*"; fi
}

apt_updated=
apt_install() {
	command -v apt-get >/dev/null || die "missing $*, and this is not a Debian-like system: install it yourself"
	if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
	log "installing $*"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for() { # wait_for NAME CMD...
	local name=$1; shift
	for _ in $(seq 1 60); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.5
	done
	die "$name did not become ready"
}

pg_up() { pg_isready -q -h "$PGHOST" -p "$PGPORT"; }

ensure_postgres() {
	command -v pg_isready >/dev/null || apt_install postgresql-client
	if pg_up; then return 0; fi
	if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
		apt_install postgresql
		if pg_up; then return 0; fi # the package may have started it
	fi
	if command -v pg_lsclusters >/dev/null; then
		if [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
			local v; v=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
			as_root pg_createcluster "$v" main >/dev/null
		fi
		pg_lsclusters -h | while read -r ver cluster _; do
			log "starting PostgreSQL $ver/$cluster"
			as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$cluster" start || true
		done
	fi
	wait_for PostgreSQL pg_up
}

# psql_super runs psql as a PostgreSQL superuser.
psql_super() {
	if id postgres >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ] && command -v runuser >/dev/null; then
		runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PGPORT" "$@"
	else
		psql -X -q -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$PGPORT" -U postgres "$@"
	fi
}

bootstrap_postgres() {
	psql_super -d postgres <<-SQL
	DO \$\$
	BEGIN
	  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bulkhead_owner') THEN
	    CREATE ROLE bulkhead_owner LOGIN PASSWORD '$DEV_PASSWORD' NOSUPERUSER BYPASSRLS NOCREATEROLE NOCREATEDB;
	  END IF;
	  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bulkhead_app') THEN
	    CREATE ROLE bulkhead_app LOGIN PASSWORD '$DEV_PASSWORD' NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB;
	  END IF;
	END
	\$\$;
	SQL
	local db
	for db in bulkhead bulkhead_test bulkhead_test_t1 bulkhead_test_t2; do
		if [ -z "$(psql_super -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
			log "creating database $db"
			psql_super -d postgres -c "CREATE DATABASE $db OWNER bulkhead_owner"
		fi
		psql_super -d "$db" -c "REVOKE ALL ON DATABASE $db FROM PUBLIC; GRANT CONNECT, TEMPORARY ON DATABASE $db TO bulkhead_app; REVOKE CREATE ON SCHEMA public FROM PUBLIC; GRANT USAGE ON SCHEMA public TO bulkhead_app;"
	done
}

redis_up() { redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping | grep -q PONG; }

ensure_redis() {
	command -v redis-cli >/dev/null || apt_install redis-tools
	if redis_up 2>/dev/null; then return 0; fi
	command -v redis-server >/dev/null || apt_install redis-server
	if redis_up 2>/dev/null; then return 0; fi # the package may have started one
	log "starting Redis on $REDIS_HOST:$REDIS_PORT"
	mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
	redis-server --daemonize yes --bind "$REDIS_HOST" --port "$REDIS_PORT" --save "" --appendonly no \
		--dir /var/lib/redis --logfile /var/log/redis/bulkhead-dev.log
	wait_for Redis redis_up
}

# ensure_pgbouncer installs PgBouncer for the store's tests through a
# transaction pooler (store/pgbouncer_test.go): they run /usr/sbin/pgbouncer
# themselves. Debian's package may also start its own service on 6432, with
# its default configuration (no databases); the tests do not use it.
ensure_pgbouncer() {
	if command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ]; then return 0; fi
	apt_install pgbouncer
}

# ensure_chromium installs Debian's Chromium for the console's browser test
# (gateway/control, driven by chromedp): it runs /usr/bin/chromium headless.
ensure_chromium() {
	if command -v chromium >/dev/null || [ -x /usr/bin/chromium ]; then return 0; fi
	apt_install chromium
}

# The Redis Cluster and Sentinel tests (store/storetest) start redis-server
# processes of their own on free loopback ports, and create the cluster with
# redis-cli, so both must be here even when the shared Redis runs elsewhere
# (compose, another REDIS_HOST). Then the package is installed without
# starting Debian's service, which would want port 6379.
ensure_redis_binaries() {
	command -v redis-cli >/dev/null || apt_install redis-tools
	command -v redis-server >/dev/null && return 0
	local policy=/usr/sbin/policy-rc.d
	if [ -e "$policy" ]; then apt_install redis-server; return; fi
	as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod +x $policy"
	local rc=0
	apt_install redis-server || rc=$?
	as_root rm -f "$policy"
	return "$rc"
}

command -v go >/dev/null || die "Go is not on PATH: install Go 1.26 or newer"
ensure_postgres
bootstrap_postgres
ensure_redis
ensure_pgbouncer
ensure_redis_binaries
ensure_chromium
log "PostgreSQL on $PGHOST:$PGPORT and Redis on $REDIS_HOST:$REDIS_PORT are ready"
