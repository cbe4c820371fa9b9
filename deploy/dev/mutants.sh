#!/usr/bin/env bash
# `make mutants`: breaks each tenancy guarantee on purpose and checks that
# a test fails. The mutations are the files of deploy/dev/mutants, one per
# guarantee-breaking change:
#
#   NN-name.sql    SQL run as the owner role after migrating a scratch
#                  database (schema, policies, grants, triggers)
#   NN-name.patch  a `git diff` applied to a temporary copy of the tree;
#                  the tests are compiled from the checkout with the copy's
#                  changed files as an -overlay (so the build cache serves
#                  everything else, and the checkout is never modified) and
#                  run in the copy
#
# Each starts with a description line and one or more "tests:" lines naming
# a package and the tests (a regular expression of top-level test names)
# expected to kill it:
#
#   -- api_keys gets a second, permissive policy for SELECT
#   -- tests: ./store TestCatalog|TestTenantSeesOnlyItsRows
#
# For every mutation, one at a time: a fresh database copied from a migrated
# template, the mutation, the named tests (test binaries compiled once for
# the clean tree and once per code mutation, with make test's -race), the
# database dropped. A
# mutation survives if its tests pass. The script fails if any mutation
# survives, if the clean tree's tests fail, or if a mutation no longer
# applies or compiles: then the list is stale and must be brought up to date.
#
# Databases are created as bulkhead_mutant_<pid>_* by the PostgreSQL
# superuser (as deploy/dev/services.sh reaches it) and always dropped; the
# tests are pointed at them only, never at bulkhead or bulkhead_test. Redis
# is the shared one: tests keep to random keys and prefixes.
#
# MUTANTS=REGEX runs only the mutations whose file names match.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
LIST=$ROOT/deploy/dev/mutants
GO=${GO:-go}
PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
DEV_PASSWORD=bulkhead
ONLY=${MUTANTS:-}

log() { printf 'mutants: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# psql_super runs psql as a PostgreSQL superuser (as services.sh does).
psql_super() {
	if id postgres >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ] && command -v runuser >/dev/null; then
		runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PGPORT" "$@"
	else
		psql -X -q -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$PGPORT" -U postgres "$@"
	fi
}

dsn() { # dsn ROLE DB
	printf 'postgres://%s:%s@%s:%s/%s?sslmode=disable' "$1" "$DEV_PASSWORD" "$PGHOST" "$PGPORT" "$2"
}

DB_PREFIX=bulkhead_mutant_$$
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bulkhead-mutants.XXXXXX")
TREE=$WORK/tree

cleanup() {
	local dbs
	dbs=$(psql_super -d postgres -tAc "SELECT datname FROM pg_database WHERE datname LIKE '${DB_PREFIX}\_%'" 2>/dev/null || true)
	for db in $dbs; do
		case $db in
		"${DB_PREFIX}"_*) psql_super -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || log "could not drop $db" ;;
		esac
	done
	rm -rf "$WORK"
}
trap cleanup EXIT

# newdb NAME [TEMPLATE]: a database owned by the owner role, with the grants
# services.sh gives the test database.
newdb() {
	local name=$1 template=${2:-}
	case $name in "${DB_PREFIX}"_*) ;; *) die "refusing to create $name" ;; esac
	psql_super -d postgres -c "CREATE DATABASE $name OWNER bulkhead_owner${template:+ TEMPLATE $template}"
	psql_super -d "$name" -c "REVOKE ALL ON DATABASE $name FROM PUBLIC; GRANT CONNECT, TEMPORARY ON DATABASE $name TO bulkhead_app;"
	if [ -z "$template" ]; then
		psql_super -d "$name" -c "REVOKE CREATE ON SCHEMA public FROM PUBLIC; GRANT USAGE ON SCHEMA public TO bulkhead_app;"
	fi
}

dropdb() {
	case $1 in "${DB_PREFIX}"_*) ;; *) die "refusing to drop $1" ;; esac
	psql_super -d postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)"
}

# ---- the list ---------------------------------------------------------------

shopt -s nullglob
files=()
for f in "$LIST"/*.sql "$LIST"/*.patch; do
	if [ -n "$ONLY" ] && ! [[ $(basename "$f") =~ $ONLY ]]; then continue; fi
	files+=("$f")
done
[ ${#files[@]} -gt 0 ] || die "no mutations in $LIST${ONLY:+ matching $ONLY}"
mapfile -t files < <(printf '%s\n' "${files[@]}" | sort)

describe() { sed -n '1{s/^\(--\|#\) *//;p;q}' "$1"; }
# tests FILE: "PKG REGEX" lines
tests_of() { sed -n 's/^\(--\|#\) *tests: *//p' "$1"; }

declare -A pkg_tests # package -> regex union, for the clean run
for f in "${files[@]}"; do
	[ -n "$(tests_of "$f")" ] || die "$(basename "$f"): no 'tests:' line"
	while read -r pkg re; do
		[ -n "$re" ] || die "$(basename "$f"): 'tests:' needs a package and a regex"
		pkg_tests[$pkg]=${pkg_tests[$pkg]:+${pkg_tests[$pkg]}|}$re
	done < <(tests_of "$f")
done

# ---- a copy of the tree, for the patches ------------------------------------

log "copying the tree to $TREE"
mkdir -p "$TREE"
git -C "$ROOT" ls-files -z --cached --others --exclude-standard |
	tar -C "$ROOT" -cf - --null -T - --ignore-failed-read 2>/dev/null | tar -xf - -C "$TREE"
git -C "$TREE" init -q
git -C "$TREE" -c user.name=mutants -c user.email=mutants@localhost add -A
git -C "$TREE" -c user.name=mutants -c user.email=mutants@localhost commit -qm clean

for f in "${files[@]}"; do
	case $f in *.patch)
		git -C "$TREE" apply --check "$f" || die "$(basename "$f") no longer applies to the tree: update it" ;;
	esac
done

binname() { basename "$1"; } # ./cmd/bulkhead -> bulkhead(.test), as go test -c -o DIR names it

# build OUT [OVERLAY] -- PKG...: test binaries into OUT, compiled in the
# checkout itself with make test's flags, so that every package the
# mutation does not touch comes from the build cache; a code mutation
# reaches the compiler as an -overlay of the patched copy's files.
BUILDFLAGS=${MUTANTS_BUILDFLAGS:--race}
build() {
	local out=$1 overlay=$2
	shift 3
	mkdir -p "$out"
	# shellcheck disable=SC2086 # flags are words
	(cd "$ROOT" && "$GO" test -c $BUILDFLAGS ${overlay:+-overlay "$overlay"} -o "$out/" "$@")
}

# overlay FILE: the -overlay JSON that replaces the checkout's files by the
# copy's where the applied patch changed them.
overlay() {
	local first=1
	{
		printf '{"Replace": {'
		while IFS= read -r path; do
			[ $first -eq 1 ] || printf ','
			first=0
			if [ -e "$TREE/$path" ]; then
				printf '\n  "%s": "%s"' "$ROOT/$path" "$TREE/$path"
			else
				printf '\n  "%s": ""' "$ROOT/$path"
			fi
		done < <(git -C "$TREE" status --porcelain --untracked-files=all | cut -c4-)
		printf '\n}}\n'
	} >"$1"
}

start=$SECONDS
log "compiling the tests of ${!pkg_tests[*]}"
build "$WORK/clean" "" -- "${!pkg_tests[@]}"
# shellcheck disable=SC2086 # flags are words
(cd "$ROOT" && "$GO" build $BUILDFLAGS -o "$WORK/bulkhead" ./cmd/bulkhead)

TEMPLATE=${DB_PREFIX}_template
log "migrating the template database $TEMPLATE"
newdb "$TEMPLATE"
BULKHEAD_ADMIN_DATABASE_URL=$(dsn bulkhead_owner "$TEMPLATE") "$WORK/bulkhead" migrate >/dev/null

# run_tests BINDIR DB LOG PKG REGEX: runs one package's tests against DB;
# appends output to LOG. Returns the test binary's status.
run_tests() {
	local bindir=$1 db=$2 out=$3 pkg=$4 re=$5
	(cd "$TREE/${pkg#./}" &&
		env BULKHEAD_TEST_DATABASE_URL="$(dsn bulkhead_app "$db")" \
			BULKHEAD_TEST_ADMIN_DATABASE_URL="$(dsn bulkhead_owner "$db")" \
			BULKHEAD_REQUIRE_SERVICES=1 \
			"$bindir/$(binname "$pkg").test" -test.run "^($re)\$" -test.count=1 -test.timeout=5m) >>"$out" 2>&1
}

# ---- the clean tree passes ---------------------------------------------------

CLEAN_DB=${DB_PREFIX}_clean
newdb "$CLEAN_DB" "$TEMPLATE"
for pkg in "${!pkg_tests[@]}"; do
	log "clean run: $pkg"
	if ! run_tests "$WORK/clean" "$CLEAN_DB" "$WORK/clean.log" "$pkg" "${pkg_tests[$pkg]}"; then
		cat "$WORK/clean.log" >&2
		die "the clean tree fails $pkg's tests: fix that first, a mutation check needs a green suite"
	fi
done
dropdb "$CLEAN_DB"

# ---- the mutations -----------------------------------------------------------

declare -a rows
survived=0
n=0
for f in "${files[@]}"; do
	n=$((n + 1))
	name=$(basename "$f")
	db=${DB_PREFIX}_$n
	out=$WORK/$name.log
	t0=$SECONDS
	newdb "$db" "$TEMPLATE"
	bindir=$WORK/clean
	case $f in
	*.sql)
		psql -X -q -v ON_ERROR_STOP=1 "$(dsn bulkhead_owner "$db")" -f "$f" >"$out" 2>&1 ||
			{ cat "$out" >&2; die "$name no longer applies to the schema: update it"; }
		;;
	*.patch)
		git -C "$TREE" apply "$f" || die "$name no longer applies: update it"
		pkgs=$(tests_of "$f" | awk '{print $1}' | sort -u)
		bindir=$WORK/mutant
		rm -rf "$bindir"
		overlay "$WORK/overlay.json"
		# shellcheck disable=SC2086 # one word per package
		build "$bindir" "$WORK/overlay.json" -- $pkgs >"$out" 2>&1 || { cat "$out" >&2; die "$name does not compile: update it"; }
		;;
	esac
	status=ok
	while read -r pkg re; do
		run_tests "$bindir" "$db" "$out" "$pkg" "$re" || status=failed
	done < <(tests_of "$f")
	if [[ $f == *.patch ]]; then
		git -C "$TREE" reset -q --hard
	fi
	dropdb "$db"
	killers=$(grep -oE '^--- FAIL: [A-Za-z0-9_]+' "$out" | sed 's/^--- FAIL: //' | sort -u | paste -sd, - || true)
	if [ "$status" = ok ]; then
		result=SURVIVED
		survived=$((survived + 1))
	elif [ -n "$killers" ]; then
		result=killed
	else
		result=ERROR # the binary failed without a failing test (panic, timeout): see the log
		killers="(no test failed: $(tail -n 1 "$out"))"
		survived=$((survived + 1))
	fi
	rows+=("$name|$result|${killers:--}|$((SECONDS - t0))s")
	log "$name ($(describe "$f")): $result${killers:+ by $killers} ($((SECONDS - t0))s)"
	if [ "$result" != killed ]; then
		sed 's/^/    /' "$out" | tail -n 40 >&2
	fi
done

printf '\n%-50s  %-8s  %-6s  %s\n' MUTATION RESULT TIME "KILLED BY"
for r in "${rows[@]}"; do
	IFS='|' read -r name result killers took <<<"$r"
	printf '%-50s  %-8s  %-6s  %s\n' "$name" "$result" "$took" "$killers"
done
printf '\n%d mutations, %d survived, %ds\n' "$n" "$survived" "$((SECONDS - start))"
[ "$survived" -eq 0 ] || die "$survived mutation(s) survived: a guarantee can break without a test noticing"
