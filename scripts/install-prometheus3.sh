#!/usr/bin/env bash
# The current Prometheus and Alertmanager lines, built from the Go module proxy
# into a cache that survives between runs on the same machine (CI runs on the
# submitting machine). Debian ships Prometheus 2.42 and Alertmanager 0.25; the
# tests run the promtool/amtool checks on both lines and the live stack on these.
#
#   scripts/install-prometheus3.sh          build what is missing, print nothing else
#   scripts/install-prometheus3.sh --path   print the bin directories (for PATH)
#
# A cold build took 9 minutes on 2 cores shared with other work (Prometheus 8,
# Alertmanager 1); a warm run only checks that each cached binary answers --version.
# Bump a version here and the next run builds it into a new directory.
#
# Neither web UI is built (its assets need an npm build). Prometheus: the API, /metrics
# and /-/ready work, the UI pages (/alerts, /query, /graph) answer 500. Alertmanager's
# module lacks ui/app/dist, which its ui package embeds, so it is built from a copy of
# the module with a placeholder page there (/ says where the API is); API v2 works.
# demo/stack.py prints API links when the UI is missing.
set -euo pipefail

PROMETHEUS_MODULE_VERSION="${PROMETHEUS_MODULE_VERSION:-v0.316.0}" # Prometheus 3.16.0
ALERTMANAGER_VERSION="${ALERTMANAGER_VERSION:-v0.35.0}"
# root (CI): /var/cache/modelmon; anyone else: ~/.cache/modelmon; MODELMON_CACHE overrides.
if [ "$(id -u)" -eq 0 ]; then default_cache=/var/cache/modelmon; else default_cache="${XDG_CACHE_HOME:-$HOME/.cache}/modelmon"; fi
CACHE="${MODELMON_CACHE:-$default_cache}"

# v0.316.0 -> 3.16.0 (Prometheus tags its Go module v0.3MM.P for release 3.MM.P)
prom_release() {
  local v="${1#v0.}" minor patch
  minor="${v%%.*}"; patch="${v#*.}"
  echo "3.$((10#${minor:1})).${patch}"
}
PROMETHEUS_VERSION="$(prom_release "$PROMETHEUS_MODULE_VERSION")"
PROM_DIR="$CACHE/bin/prometheus-$PROMETHEUS_VERSION"
AM_DIR="$CACHE/bin/alertmanager-${ALERTMANAGER_VERSION#v}"

if [ "${1:-}" = "--path" ]; then
  echo "$PROM_DIR:$AM_DIR"
  exit 0
fi

ok() { # every named binary exists and answers --version
  local dir="$1"; shift
  for b in "$@"; do
    [ -x "$dir/$b" ] && "$dir/$b" --version >/dev/null 2>&1 || return 1
  done
}

export GOFLAGS="${GOFLAGS:+$GOFLAGS }-trimpath -buildvcs=false"
export CGO_ENABLED=0
ldflags() { # version info, as the release builds (.promu.yml) set it
  local v="$1" c=github.com/prometheus/common/version
  echo "-s -w -X $c.Version=$v -X $c.Revision=$2 -X $c.Branch=HEAD -X $c.BuildUser=modelmon@install-prometheus3 -X $c.BuildDate=$(date -u +%Y%m%d-%H:%M:%S)"
}

ok "$PROM_DIR" prometheus promtool && ok "$AM_DIR" alertmanager amtool && exit 0

command -v go >/dev/null || [ ! -x /usr/local/go/bin/go ] || PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "install-prometheus3.sh: needs Go 1.26 or later on PATH" >&2; exit 1; }

# One build at a time (make demo and make test may run together); a build that was
# interrupted leaves a *.tmp.* directory, removed here.
mkdir -p "$CACHE/bin"
exec 9>"$CACHE/bin/.lock"
flock 9
rm -rf "$PROM_DIR".tmp.* "$AM_DIR".tmp.*

if ! ok "$PROM_DIR" prometheus promtool; then
  echo "building Prometheus $PROMETHEUS_VERSION (module $PROMETHEUS_MODULE_VERSION) into $PROM_DIR; about 8 minutes on 2 cores"
  start=$SECONDS
  tmp="$PROM_DIR.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  GOBIN="$tmp" nice -n 19 go install -ldflags "$(ldflags "$PROMETHEUS_VERSION" "$PROMETHEUS_MODULE_VERSION")" \
    "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_MODULE_VERSION" \
    "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_MODULE_VERSION"
  ok "$tmp" prometheus promtool
  rm -rf "$PROM_DIR"; mv "$tmp" "$PROM_DIR"
  echo "built Prometheus $PROMETHEUS_VERSION in $((SECONDS - start)) s"
fi

if ! ok "$AM_DIR" alertmanager amtool; then
  echo "building Alertmanager ${ALERTMANAGER_VERSION#v} into $AM_DIR; a few minutes"
  start=$SECONDS
  tmp="$AM_DIR.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp/src"
  src="$(go mod download -json "github.com/prometheus/alertmanager@$ALERTMANAGER_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [ -d "$src" ] || { echo "install-prometheus3.sh: go mod download gave no module directory" >&2; exit 1; }
  # A writable copy with placeholder UI pages where ui/web.go embeds app/dist
  # (the release build makes them with npm; the module ships none).
  cp -r "$src/." "$tmp/src/"
  chmod -R u+w "$tmp/src"
  for app in elm mantine; do
    mkdir -p "$tmp/src/ui/app/dist/$app/assets"
    printf '<!doctype html><title>Alertmanager</title><p>Alertmanager %s, built without its web UI assets: the API is at <a href="/api/v2/status">/api/v2/</a>.</p>\n' \
      "${ALERTMANAGER_VERSION#v}" | gzip -9n > "$tmp/src/ui/app/dist/$app/index.html.gz"
  done
  (cd "$tmp/src" && nice -n 19 go build -ldflags "$(ldflags "${ALERTMANAGER_VERSION#v}" "$ALERTMANAGER_VERSION")" \
    -o "$tmp/" ./cmd/alertmanager ./cmd/amtool)
  rm -rf "$tmp/src"
  ok "$tmp" alertmanager amtool
  rm -rf "$AM_DIR"; mv "$tmp" "$AM_DIR"
  echo "built Alertmanager ${ALERTMANAGER_VERSION#v} in $((SECONDS - start)) s"
fi
