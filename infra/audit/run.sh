#!/usr/bin/env bash
# Audits every locked dependency (uv.lock as exported with its hashes, all groups and extras, the
# workspace's own packages left out) for known vulnerabilities with pip-audit, minus the
# advisories infra/audit/ignored.txt accepts with a reason. Fails on a finding, and also on
# a package it could not audit (--strict), so an unreachable vulnerability source never
# passes as "nothing found".
#   PIP_AUDIT_SERVICE=osv infra/audit/run.sh    # osv.dev instead of PyPI's JSON API
set -euo pipefail
cd "$(dirname "$0")/../.."
UV=${UV:-python3 -m uv}

requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
$UV export --frozen --no-emit-workspace --all-groups --all-extras --quiet >"$requirements"

ignored=()
while read -r id _; do
    [[ -z "$id" || "$id" == \#* ]] && continue
    ignored+=(--ignore-vuln "$id")
done <infra/audit/ignored.txt

exec $UV run --frozen pip-audit --requirement "$requirements" --require-hashes --disable-pip \
    --strict --vulnerability-service "${PIP_AUDIT_SERVICE:-pypi}" --progress-spinner off "${ignored[@]}"
