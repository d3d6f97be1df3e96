#!/usr/bin/env bash
# System packages the tests and the native demo need (Debian/Ubuntu), the current
# Prometheus and Alertmanager, then the Elasticsearch zip: Debian's Prometheus 2.42 and
# promtool, Alertmanager 0.25 and amtool, Chromium (the drift report's browser test),
# redis-server (the Redis outcome store's tests start their own; the packaged service is left alone);
# Prometheus 3.x and Alertmanager 0.3x built from the Go module proxy into a cache
# (scripts/install-prometheus3.sh: about 15 minutes the first time, seconds after);
# Java and Maven come with the Elasticsearch step.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v promtool >/dev/null || need+=(prometheus)
command -v prometheus >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
command -v amtool >/dev/null || need+=(prometheus-alertmanager)
command -v chromium >/dev/null || need+=(chromium)
command -v redis-server >/dev/null || need+=(redis-server)

if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  packages="$(printf '%s\n' "${need[@]}" | sort -u | tr '\n' ' ')"
  echo "installing Debian packages: $packages"
  $sudo apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $packages >/dev/null
fi

scripts/install-prometheus3.sh
scripts/install-k8s-tools.sh  # kustomize, kubeconform, the Prometheus Operator's CRDs: tests/test_kubernetes.py
scripts/elasticsearch.sh install
