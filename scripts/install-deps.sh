#!/usr/bin/env bash
# System packages the tests and the native demo need (Debian/Ubuntu), then the
# Elasticsearch zip: Prometheus and promtool, Alertmanager and amtool, Chromium
# (the drift report's browser test); Java and Maven come with the Elasticsearch step.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v promtool >/dev/null || need+=(prometheus)
command -v prometheus >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
command -v amtool >/dev/null || need+=(prometheus-alertmanager)
command -v chromium >/dev/null || need+=(chromium)

if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  packages="$(printf '%s\n' "${need[@]}" | sort -u | tr '\n' ' ')"
  echo "installing Debian packages: $packages"
  $sudo apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $packages >/dev/null
fi

scripts/elasticsearch.sh install
