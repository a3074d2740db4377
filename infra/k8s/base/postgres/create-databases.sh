#!/bin/bash
# A role and a database for each stateful service (no service reads another's database),
# with the passwords of the flywheel-postgres Secret. The image runs this once, when it
# initialises an empty volume.
set -euo pipefail
for service in registry deployer drift retrain; do
  password_variable="${service^^}_DB_PASSWORD"
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v name="$service" -v password="${!password_variable}" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
SQL
done
