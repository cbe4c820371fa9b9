#!/usr/bin/env bash
# Prints the directory of a local Go vulnerability database for
# `govulncheck -db file://DIR`, building it first if this machine has none
# for the pinned version. Used by `make lint`.
#
# govulncheck normally reads the database from the Go team's server, which the
# machines we build on cannot reach; they reach the Go module proxy. The
# proxy serves the database's source repository as the module
# golang.org/x/vulndb, whose data/osv holds every published entry as an OSV
# record, and whose own cmd/indexdb turns such a folder into the v1 layout
# that govulncheck reads (index/db.json, index/modules.json, ID/<id>.json,
# each with its .gz). Both come through the proxy, verified against the Go
# checksum database, so nothing is installed by hand and no converter of
# ours is involved.
#
# VULNDB (module@version, set by the Makefile) pins the snapshot: advisories
# published after it are not seen until it is bumped, to the pseudo-version
# that `go list -m golang.org/x/vulndb@latest` prints. The entries of that
# module carry no modification times (the Go team's build takes them from
# git history), so govulncheck reports the database as last modified in
# year 1; matching does not use them.
#
# The built database goes into the Go build cache, named by version, so every
# clone and worktree on the machine shares it and `go clean -cache` drops it.
# It is built beside its final name and renamed into place, so a `make lint`
# killed half-way, or two running at once, never leave a partial database.
set -euo pipefail

GO=${GO:-go}
VULNDB=${VULNDB:?set VULNDB=golang.org/x/vulndb@VERSION}
mod=${VULNDB%@*}
ver=${VULNDB#*@}
dir="$("$GO" env GOCACHE)/bulkhead-vulndb-$ver"

if [ ! -f "$dir/index/modules.json" ]; then
	printf 'vulndb: building the vulnerability database from %s into %s\n' "$VULNDB" "$dir" >&2
	# -json puts a failure's reason on stdout, in its Error field: show it.
	json=$("$GO" mod download -json "$VULNDB") || { printf 'vulndb: cannot download %s:\n%s\n' "$VULNDB" "$json" >&2; exit 1; }
	src=$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -d "$src/data/osv" ] || { echo "vulndb: no data/osv in $VULNDB ($src)" >&2; exit 1; }
	mkdir -p "$(dirname "$dir")"
	tmp=$(mktemp -d "$dir.tmp.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	"$GO" run "$mod/cmd/indexdb@$ver" -vulns "$src/data/osv" -out "$tmp"
	chmod 755 "$tmp"
	# Another make lint may have finished first: then keep its copy.
	mv -T "$tmp" "$dir" 2>/dev/null || [ -f "$dir/index/modules.json" ]
fi
echo "$dir"
