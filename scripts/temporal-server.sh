#!/usr/bin/env bash
# Provides the cluster-grade Temporal server (`server`) and its schema tool (`sql`, a.k.a.
# temporal-sql-tool) for fleetpatch's cluster mode, and prints the server's path on stdout
# (`--sql-tool` prints the schema tool's, `--version` the pinned version, `--schema-dir` the
# PostgreSQL schema directory shipped inside the module). Everything else goes to stderr.
#
# Order: $TEMPORAL_SERVER (and $TEMPORAL_SQL_TOOL), then builds in <project>/.tools/bin that match the
# pinned version, then fresh builds from the Go module proxy. The version is pinned here and nowhere
# else; both modules have no replace directives, so `go install pkg@version` builds them. The first
# build takes ~5 min on 2 cores (the Temporal CLI build, scripts/temporal-cli.sh, warms the module
# cache; both embed server v1.29).
set -euo pipefail

TEMPORAL_SERVER_VERSION=v1.29.1
TEMPORAL_SERVER_MODULE=go.temporal.io/server
SERVER_PKG=$TEMPORAL_SERVER_MODULE/cmd/server
SQL_TOOL_PKG=$TEMPORAL_SERVER_MODULE/cmd/tools/sql

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bindir="$root/.tools/bin"
server="$bindir/server"
sqltool="$bindir/sql"
stamp="$bindir/server.version"

find_go() {
  local go
  go=$(command -v go || true)
  [ -z "$go" ] && [ -x /usr/local/go/bin/go ] && go=/usr/local/go/bin/go
  echo "$go"
}

want=server
case "${1:-}" in
  --version) echo "$TEMPORAL_SERVER_VERSION"; exit 0 ;;
  --sql-tool) want=sql ;;
  --schema-dir)
    go=$(find_go)
    [ -z "$go" ] && { echo "Go is needed to locate the schema files of $TEMPORAL_SERVER_MODULE@$TEMPORAL_SERVER_VERSION." >&2; exit 1; }
    dir="$("$go" env GOMODCACHE)/$TEMPORAL_SERVER_MODULE@$TEMPORAL_SERVER_VERSION/schema/postgresql/v12"
    if [ ! -d "$dir" ]; then
      (cd /tmp && "$go" mod download "$TEMPORAL_SERVER_MODULE@$TEMPORAL_SERVER_VERSION" >&2) || true
    fi
    [ -d "$dir" ] || { echo "No schema directory at $dir." >&2; exit 1; }
    echo "$dir"; exit 0 ;;
  "") ;;
  *) echo "usage: $0 [--sql-tool | --schema-dir | --version]" >&2; exit 2 ;;
esac

if [ "$want" = server ] && [ -n "${TEMPORAL_SERVER:-}" ]; then
  [ -x "$TEMPORAL_SERVER" ] && { echo "$TEMPORAL_SERVER"; exit 0; }
  echo "TEMPORAL_SERVER=$TEMPORAL_SERVER is not an executable file." >&2; exit 1
fi
if [ "$want" = sql ] && [ -n "${TEMPORAL_SQL_TOOL:-}" ]; then
  [ -x "$TEMPORAL_SQL_TOOL" ] && { echo "$TEMPORAL_SQL_TOOL"; exit 0; }
  echo "TEMPORAL_SQL_TOOL=$TEMPORAL_SQL_TOOL is not an executable file." >&2; exit 1
fi

out() { if [ "$want" = sql ]; then echo "$sqltool"; else echo "$server"; fi; }

if [ -x "$server" ] && [ -x "$sqltool" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$TEMPORAL_SERVER_VERSION" ]; then
  out; exit 0
fi

go=$(find_go)
if [ -z "$go" ]; then
  cat >&2 <<MSG
fleetpatch's cluster mode needs the Temporal server $TEMPORAL_SERVER_VERSION and its schema tool, and found
neither in $bindir nor Go to build them. Install Go >= 1.25 and run this again (it runs
\`go install $SERVER_PKG@$TEMPORAL_SERVER_VERSION\` and \`go install $SQL_TOOL_PKG@$TEMPORAL_SERVER_VERSION\`),
or point TEMPORAL_SERVER and TEMPORAL_SQL_TOOL at builds of that version.
MSG
  exit 1
fi

echo "Building the Temporal server $TEMPORAL_SERVER_VERSION and its schema tool from the Go module proxy into $bindir" >&2
echo "(~5 min on 2 cores with a warm module cache)." >&2
mkdir -p "$bindir"
start=$(date +%s)
rm -f "$stamp"
CGO_ENABLED=0 GOBIN="$bindir" "$go" install "$SERVER_PKG@$TEMPORAL_SERVER_VERSION" >&2
CGO_ENABLED=0 GOBIN="$bindir" "$go" install "$SQL_TOOL_PKG@$TEMPORAL_SERVER_VERSION" >&2
echo "$TEMPORAL_SERVER_VERSION" >"$stamp"
echo "Temporal server built in $(( $(date +%s) - start )) s." >&2
out
