#!/usr/bin/env bash
# The benchmarks' own virtualenv (benchmarks/.venv) and load generators (wrk, hey); idempotent.
# Elasticsearch for the log-pipeline benchmark comes from scripts/elasticsearch.sh (make deps).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/benchmarks/.venv"

if ! command -v wrk >/dev/null || ! command -v hey >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends wrk hey >/dev/null
fi
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
cd "$ROOT"
"$VENV/bin/pip" install -q -r benchmarks/requirements.txt -e '.[flask,gunicorn,report,elastic]'
scripts/elasticsearch.sh install >/dev/null \
  || echo "benchmarks/setup.sh: no Elasticsearch, the log-pipeline benchmark will report 'not run'" >&2
