#!/usr/bin/env bash
# Writes the env files an overlay's secretGenerator reads, with fresh random passwords and
# tokens: postgres.env (the superuser's and each service's database password),
# database.env (each service's database URL), auth.env (bearer tokens and their roles) and
# tls/ (a CA, ca.pem, and the services' certificate, server.pem and server-key.pem, for the
# Services' names in NAMESPACE, default flywheel, made by `flywheel certs init`).
# `make-secrets.sh [FOLDER]`, by default overlays/prod/secrets beside this script. Files
# that exist are kept (their values may be in use); delete them first to rotate.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
folder=${1:-$here/overlays/prod/secrets}
namespace=${NAMESPACE:-flywheel}
services=(registry deployer drift retrain)

random() { od -vAn -N24 -tx1 /dev/urandom | tr -d ' \n'; }
keep() { echo "make-secrets: keeping $*" >&2; }
write() { (umask 077 && cat >"$folder/$1") && echo "make-secrets: wrote $folder/$1" >&2; }

mkdir -p "$folder"

# The database URLs carry the passwords PostgreSQL's init script gives the roles: the two
# files are written together or not at all.
if [[ -e $folder/postgres.env || -e $folder/database.env ]]; then
  keep "postgres.env and database.env in $folder"
else
  declare -A password
  for service in "${services[@]}"; do password[$service]=$(random); done
  {
    echo "POSTGRES_PASSWORD=$(random)"
    for service in "${services[@]}"; do echo "${service^^}_DB_PASSWORD=${password[$service]}"; done
  } | write postgres.env
  for service in "${services[@]}"; do
    echo "$service=postgresql+psycopg://$service:${password[$service]}@flywheel-postgres:5432/$service"
  done | write database.env
fi

if [[ -e $folder/auth.env ]]; then
  keep "auth.env in $folder"
else
  admin=$(random) client=$(random) service=$(random) retrain=$(random)
  {
    echo "tokens={\"$admin\": \"admin\", \"$client\": \"reader\", \"$service\": \"reader\", \"$retrain\": \"writer\"}"
    echo "admin-token=$admin"
    echo "client-token=$client"
    echo "service-token=$service"
    echo "retrain-token=$retrain"
  } | write auth.env
fi

# The `flywheel` command of the workspace: on PATH inside `uv run`, else through uv.
flywheel_cli() {
  if command -v flywheel >/dev/null 2>&1; then command flywheel "$@"
  elif command -v uv >/dev/null 2>&1; then uv run --frozen --project "$here/../.." flywheel "$@"
  else python3 -m uv run --frozen --project "$here/../.." flywheel "$@"; fi
}
hosts=(--host localhost --host 127.0.0.1)
for service in registry deployer gateway drift retrain; do
  for name in "flywheel-$service" "flywheel-$service.$namespace" "flywheel-$service.$namespace.svc" \
    "flywheel-$service.$namespace.svc.cluster.local"; do
    hosts+=(--host "$name")
  done
done
(umask 077 && flywheel_cli certs init --tls-only --dir "$folder" "${hosts[@]}" 2>&1 | sed 's/^/make-secrets: /' >&2)
