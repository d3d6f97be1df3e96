#!/usr/bin/env bash
# A local Elasticsearch for tests, CI and benchmarks: the integ-test-zip distribution
# (no bundled JDK: 8.x runs on Java 17+, 9.x on Java 21+), fetched with Maven, run as an
# unprivileged user on loopback only. Two lines: the current one (elk/VERSION, 9.x, what
# docker-compose.yml pins and the tests and the demo run by default) and the previous one
# (elk/VERSION-8, 8.19), on which the setup and shipper tests run too.
#
#   scripts/elasticsearch.sh install            fetch and unpack both lines (idempotent: the zips
#                                               stay in ~/.m2 and the cache), create the user
#   scripts/elasticsearch.sh start DIR [PORT]   start a node keeping config/data/logs in DIR,
#                                               wait until it is healthy, print its URL
#   scripts/elasticsearch.sh stop DIR           stop the node of DIR (its data stays)
#   scripts/elasticsearch.sh home               print the unpacked distribution's path
#
# Environment: ES_LINE (9, the default: elk/VERSION; 8: elk/VERSION-8), ES_VERSION (an exact
# version instead; install then fetches only it), ES_CACHE_DIR (default: .cache/elasticsearch
# in the repository), ES_USER (default: modelmon-es, used when run as root), ES_HEAP (512m),
# ES_START_TIMEOUT (seconds, 180), ES_JAVA_HOME (default: the JDK of `java` on PATH if it is
# new enough for the version, else the newest JDK under /usr/lib/jvm that is, such as the
# machine's Temurin 25 for 9.x).
# When run as root from a checkout that user cannot read (a parent directory closed to
# others), the distribution is also copied to /var/cache/modelmon.
#
# Security is off in these throwaway nodes (loopback only, deleted after the tests);
# docker-compose.yml runs Elasticsearch and Kibana with security on.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
line_version() {  # the exact version of line 9 (elk/VERSION) or 8 (elk/VERSION-8)
  case "$1" in
    9) tr -d '[:space:]' <"$ROOT/elk/VERSION" ;;
    8) tr -d '[:space:]' <"$ROOT/elk/VERSION-8" ;;
    *) echo "elasticsearch.sh: ES_LINE must be 9 or 8, not '$1'" >&2; return 1 ;;
  esac
}
VERSION="${ES_VERSION:-$(line_version "${ES_LINE:-9}")}"
CACHE="${ES_CACHE_DIR:-$ROOT/.cache/elasticsearch}"
ES_USER="${ES_USER:-modelmon-es}"
HEAP="${ES_HEAP:-512m}"
TIMEOUT="${ES_START_TIMEOUT:-180}"
ARTIFACT="org.elasticsearch.distribution.integ-test-zip:elasticsearch:$VERSION:zip"
HOME_DIR="$CACHE/elasticsearch-$VERSION"
SHARED_HOME="/var/cache/modelmon/elasticsearch-$VERSION"

die() { echo "elasticsearch.sh: $*" >&2; exit 1; }

as_es() {  # run a command as the unprivileged user (Elasticsearch refuses root)
  if [ "$(id -u)" -eq 0 ]; then runuser -u "$ES_USER" -- "$@"; else "$@"; fi
}

java_major() {  # "17" from `java -version` of the given JDK
  "$1/bin/java" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1
}

java_needed() {  # the oldest Java that Elasticsearch $VERSION runs on
  if [ "${VERSION%%.*}" -ge 9 ]; then echo 21; else echo 17; fi
}

java_home() {  # ES_JAVA_HOME, else `java` on PATH if new enough, else the newest JDK in /usr/lib/jvm that is
  if [ -n "${ES_JAVA_HOME:-}" ]; then echo "$ES_JAVA_HOME"; return; fi
  local need java home best="" best_major=0 major
  need="$(java_needed)"
  if java="$(command -v java)"; then
    home="$(dirname "$(dirname "$(readlink -f "$java")")")"
    major="$(java_major "$home")"
    if [ "${major:-0}" -ge "$need" ]; then echo "$home"; return; fi
  fi
  for home in /usr/lib/jvm/*/; do
    home="${home%/}"
    [ -x "$home/bin/java" ] && [ ! -L "$home" ] || continue
    major="$(java_major "$home")"
    if [ "${major:-0}" -ge "$need" ] && [ "${major:-0}" -gt "$best_major" ]; then best="$home"; best_major="$major"; fi
  done
  [ -n "$best" ] || return 1
  echo "$best"
}

apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing Debian packages: $*" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

install_all() {  # both lines, or only ES_VERSION when it is set
  if [ -n "${ES_VERSION:-}" ]; then install; return; fi
  local line
  for line in 9 8; do
    ES_VERSION="$(line_version "$line")" "$0" install
  done
}

install() {
  local need=()
  command -v java >/dev/null || [ -n "${ES_JAVA_HOME:-}" ] || need+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || need+=(maven)
  command -v unzip >/dev/null || need+=(unzip)
  command -v curl >/dev/null || need+=(curl)
  [ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
  local jdk major
  jdk="$(java_home)" || die "Elasticsearch $VERSION needs Java $(java_needed) or newer, and none was found (java on PATH, /usr/lib/jvm/*): install one or set ES_JAVA_HOME"
  major="$(java_major "$jdk")"
  [ "${major:-0}" -ge "$(java_needed)" ] || die "Elasticsearch $VERSION needs Java $(java_needed) or newer; $jdk is Java ${major:-unknown}"

  if [ ! -x "$HOME_DIR/bin/elasticsearch" ]; then
    mkdir -p "$CACHE"
    local zip="$CACHE/elasticsearch-$VERSION.zip"
    if [ ! -s "$zip" ]; then
      echo "fetching $ARTIFACT" >&2
      mvn -B -q dependency:copy -Dartifact="$ARTIFACT" -DoutputDirectory="$CACHE" >&2 \
        || die "could not fetch $ARTIFACT with mvn"
    fi
    local tmp
    tmp="$(mktemp -d "$CACHE/unpack.XXXXXX")"
    unzip -q "$zip" -d "$tmp"
    rm -rf "$HOME_DIR"
    mv "$tmp/elasticsearch-$VERSION" "$HOME_DIR"
    rm -rf "$tmp"
  fi
  chmod -R a+rX "$HOME_DIR"

  if [ "$(id -u)" -eq 0 ] && ! id "$ES_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin "$ES_USER"
  fi
  if ! as_es test -x "$HOME_DIR/bin/elasticsearch" 2>/dev/null && [ "$(id -u)" -eq 0 ]; then
    rm -rf "$SHARED_HOME"
    mkdir -p "$(dirname "$SHARED_HOME")"
    cp -a "$HOME_DIR" "$SHARED_HOME"
    chmod a+rX "$(dirname "$SHARED_HOME")"
  fi
  es_home || die "user $ES_USER cannot read $HOME_DIR; set ES_CACHE_DIR to a directory it can read"
}

es_home() {  # the unpacked distribution the unprivileged user can run, if any
  local home
  for home in "$HOME_DIR" "$SHARED_HOME"; do
    if [ -x "$home/bin/elasticsearch" ] && as_es test -x "$home/bin/elasticsearch" 2>/dev/null; then
      echo "$home"
      return 0
    fi
  done
  return 1
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

running() {  # the node of DIR is alive
  [ -s "$1/es.pid" ] && kill -0 "$(cat "$1/es.pid")" 2>/dev/null
}

start() {
  local dir="${1:?usage: start DIR [PORT]}" port="${2:-}" home
  home="$(es_home)" \
    || die "Elasticsearch $VERSION is not installed in $CACHE: run 'make deps' (or scripts/elasticsearch.sh install)"
  local jdk
  jdk="$(java_home)" || die "no Java $(java_needed)+ found for Elasticsearch $VERSION: run 'make deps', or set ES_JAVA_HOME"
  running "$dir" && die "a node is already running in $dir (pid $(cat "$dir/es.pid"))"
  if [ -z "$port" ]; then
    if [ -s "$dir/port" ]; then port="$(cat "$dir/port")"; else port="$(free_port)"; fi
  fi
  mkdir -p "$dir/config" "$dir/data" "$dir/logs" "$dir/tmp"
  cp "$home/config/jvm.options" "$home/config/log4j2.properties" "$dir/config/"
  cat >"$dir/config/elasticsearch.yml" <<EOF
cluster.name: modelmon-test
node.name: node-1
discovery.type: single-node
network.host: 127.0.0.1
http.port: $port
path.data: $dir/data
path.logs: $dir/logs
# Test node only: docker-compose.yml keeps security on.
xpack.security.enabled: false
cluster.routing.allocation.disk.threshold_enabled: false
EOF
  echo "$port" >"$dir/port"
  rm -f "$dir/es.pid"
  if [ "$(id -u)" -eq 0 ]; then chown -R "$ES_USER" "$dir"; chmod 0755 "$dir"; fi
  as_es env ES_JAVA_HOME="$jdk" ES_PATH_CONF="$dir/config" ES_TMPDIR="$dir/tmp" \
    ES_JAVA_OPTS="-Xms$HEAP -Xmx$HEAP" \
    "$home/bin/elasticsearch" -d -p "$dir/es.pid" >"$dir/logs/stdout.log" 2>&1 \
    || { tail -n 40 "$dir/logs/stdout.log" "$dir/logs/modelmon-test.log" >&2 2>/dev/null; die "start failed"; }
  local url="http://127.0.0.1:$port" deadline=$((SECONDS + TIMEOUT))
  until curl -sf "$url/_cluster/health?wait_for_status=yellow&timeout=1s" >/dev/null 2>&1; do
    if ! running "$dir" || [ $SECONDS -ge $deadline ]; then
      tail -n 40 "$dir/logs/modelmon-test.log" >&2 2>/dev/null || true
      die "node in $dir did not become healthy on $url"
    fi
    sleep 0.5
  done
  echo "$url"
}

stop() {
  local dir="${1:?usage: stop DIR}"
  running "$dir" || { rm -f "$dir/es.pid"; return 0; }
  local pid
  pid="$(cat "$dir/es.pid")"
  kill -TERM "$pid"
  for _ in $(seq 1 120); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$dir/es.pid"; return 0; }
    sleep 0.5
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$dir/es.pid"
}

case "${1:-}" in
  install) install_all ;;
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  home) es_home || die "Elasticsearch $VERSION is not installed: run 'make deps'" ;;
  *) die "usage: $0 install | start DIR [PORT] | stop DIR | home" ;;
esac
