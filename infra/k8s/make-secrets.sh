#!/usr/bin/env bash
# Writes the env files an overlay's secretGenerator reads, with fresh random passwords and
# tokens: postgres.env (the superuser's and each service's database password),
# database.env (each service's database URL) and auth.env (bearer tokens and their roles).
# `make-secrets.sh [FOLDER]`, by default overlays/prod/secrets beside this script. Files
# that exist are kept (their values may be in use); delete them first to rotate.
set -euo pipefail

folder=${1:-$(dirname "${BASH_SOURCE[0]}")/overlays/prod/secrets}
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
