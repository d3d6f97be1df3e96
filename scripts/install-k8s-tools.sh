#!/usr/bin/env bash
# What tests/test_kubernetes.py needs to check deploy/kubernetes/ without a cluster, from
# the Go module proxy into the same cache as install-prometheus3.sh: kustomize and
# kubeconform built from their modules, and the Prometheus Operator's CRDs (YAML in its
# Go module, example/prometheus-operator-crd/), which the test turns into JSON schemas.
# (The Kubernetes schemas come from the kubernetes-validate package of the test extra.)
#
#   scripts/install-k8s-tools.sh          build or fetch what is missing
#   scripts/install-k8s-tools.sh --path   print "<kustomize dir>:<kubeconform dir>:<CRD dir>"
#
# A cold run (empty Go caches) took 4 minutes on 2 shared cores at load average 10-15,
# downloads included; a warm run only checks that the binaries answer.
# kustomize 5.8.3 needs Go 1.27; 5.8.2 builds with the Go 1.26 here.
set -euo pipefail

KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.8.2}"
KUBECONFORM_VERSION="${KUBECONFORM_VERSION:-v0.8.0}"
PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
if [ "$(id -u)" -eq 0 ]; then default_cache=/var/cache/modelmon; else default_cache="${XDG_CACHE_HOME:-$HOME/.cache}/modelmon"; fi
CACHE="${MODELMON_CACHE:-$default_cache}"
KZ_DIR="$CACHE/bin/kustomize-${KUSTOMIZE_VERSION#v}"
KC_DIR="$CACHE/bin/kubeconform-${KUBECONFORM_VERSION#v}"
CRD_DIR="$CACHE/prometheus-operator-${PROMETHEUS_OPERATOR_VERSION#v}/crd"

if [ "${1:-}" = "--path" ]; then
  echo "$KZ_DIR:$KC_DIR:$CRD_DIR"
  exit 0
fi

have_crds() { [ -f "$CRD_DIR/monitoring.coreos.com_prometheusrules.yaml" ]; }
[ -x "$KZ_DIR/kustomize" ] && "$KZ_DIR/kustomize" version >/dev/null 2>&1 \
  && [ -x "$KC_DIR/kubeconform" ] && "$KC_DIR/kubeconform" -v >/dev/null 2>&1 && have_crds && exit 0

command -v go >/dev/null || [ ! -x /usr/local/go/bin/go ] || PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "install-k8s-tools.sh: needs Go 1.26 or later on PATH" >&2; exit 1; }
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-trimpath -buildvcs=false"
export CGO_ENABLED=0

mkdir -p "$CACHE/bin"
exec 9>"$CACHE/bin/.lock-k8s"
flock 9
rm -rf "$KZ_DIR".tmp.* "$KC_DIR".tmp.* "${CRD_DIR%/crd}".tmp.*

build() { # dir package version [ldflags]
  local dir="$1" tmp="$1.tmp.$$" start=$SECONDS
  echo "building $2@$3 into $dir"
  rm -rf "$tmp"; mkdir -p "$tmp"
  GOBIN="$tmp" nice -n 19 go install -ldflags "-s -w ${4:-}" "$2@$3"
  rm -rf "$dir"; mv "$tmp" "$dir"
  echo "built $2 in $((SECONDS - start)) s"
}

[ -x "$KZ_DIR/kustomize" ] && "$KZ_DIR/kustomize" version >/dev/null 2>&1 \
  || build "$KZ_DIR" sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION"
[ -x "$KC_DIR/kubeconform" ] && "$KC_DIR/kubeconform" -v >/dev/null 2>&1 \
  || build "$KC_DIR" github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION" "-X main.version=$KUBECONFORM_VERSION"

if ! have_crds; then
  module="github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION"
  echo "fetching the Prometheus Operator's CRDs ($module)"
  dir="$(go mod download -json "$module" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [ -f "$dir/example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml" ] \
    || { echo "install-k8s-tools.sh: no example/prometheus-operator-crd in $module" >&2; exit 1; }
  tmp="${CRD_DIR%/crd}.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp/crd"
  cp "$dir"/example/prometheus-operator-crd/*.yaml "$tmp/crd/"
  chmod -R u+w "$tmp"
  rm -rf "${CRD_DIR%/crd}"; mv "$tmp" "${CRD_DIR%/crd}"
fi
