#!/usr/bin/env bash
# Provides the Temporal CLI (which contains the dev server, SQLite persistence and the Web UI) and
# prints its path on stdout. Everything else (progress, errors) goes to stderr.
#
# Order: $TEMPORAL_CLI, then `temporal` on PATH, then a build in <project>/.tools/bin that matches
# the pinned version, then a fresh build from the Go module proxy. The version is pinned here and
# nowhere else: v1.5.1 is the newest tag `go install pkg@version` accepts (later tags carry a
# `replace` directive in go.mod), and it embeds Temporal server 1.29 and the Web UI, without cgo.
set -euo pipefail

TEMPORAL_CLI_VERSION=v1.5.1
TEMPORAL_CLI_MODULE=github.com/temporalio/cli/cmd/temporal

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bindir="$root/.tools/bin"
bin="$bindir/temporal"
stamp="$bindir/temporal.version"

if [ "${1:-}" = "--version" ]; then echo "$TEMPORAL_CLI_VERSION"; exit 0; fi

if [ -n "${TEMPORAL_CLI:-}" ]; then
  if [ -x "$TEMPORAL_CLI" ]; then echo "$TEMPORAL_CLI"; exit 0; fi
  echo "TEMPORAL_CLI=$TEMPORAL_CLI is not an executable file." >&2
  exit 1
fi

if command -v temporal >/dev/null 2>&1; then command -v temporal; exit 0; fi

if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$TEMPORAL_CLI_VERSION" ]; then
  echo "$bin"
  exit 0
fi

go=$(command -v go || true)
[ -z "$go" ] && [ -x /usr/local/go/bin/go ] && go=/usr/local/go/bin/go
if [ -n "$go" ]; then
  echo "Building the Temporal CLI $TEMPORAL_CLI_VERSION from the Go module proxy into $bindir" >&2
  echo "(the first build downloads a few hundred MB of modules and compiles for several minutes)." >&2
  mkdir -p "$bindir"
  start=$(date +%s)
  CGO_ENABLED=0 GOBIN="$bindir" "$go" install "$TEMPORAL_CLI_MODULE@$TEMPORAL_CLI_VERSION" >&2
  echo "$TEMPORAL_CLI_VERSION" >"$stamp"
  echo "Temporal CLI built in $(( $(date +%s) - start )) s." >&2
  echo "$bin"
  exit 0
fi

cat >&2 <<MSG
fleetpatch needs the Temporal CLI ($TEMPORAL_CLI_VERSION or compatible), which contains the local dev
server, and found none: TEMPORAL_CLI is unset, there is no \`temporal\` on PATH, and Go is not installed to
build it. Either install Go >= 1.25 and run this again (it builds the CLI with \`go install
$TEMPORAL_CLI_MODULE@$TEMPORAL_CLI_VERSION\`), or download a Temporal CLI release from
https://github.com/temporalio/cli/releases and point TEMPORAL_CLI at it, or set TEMPORAL_ADDRESS to a
Temporal server you already run (then no local server is started).
MSG
exit 1
