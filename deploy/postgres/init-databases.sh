#!/usr/bin/env bash
# Runs once, when the postgres container initialises an empty data volume (docker-entrypoint-initdb.d):
# one database per service, each owned by its own user that can reach only that database
# (database per service: no service can read another's books). Passwords come from .env via compose.
set -euo pipefail

for service in gateway hours budget settlement; do
    var="${service^^}_DB_PASSWORD"
    password="${!var:?$var is not set}"
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
         -v service="$service" -v password="$password" <<'SQL'
CREATE ROLE :"service" LOGIN PASSWORD :'password';
CREATE DATABASE :"service" OWNER :"service";
REVOKE ALL ON DATABASE :"service" FROM PUBLIC;
SQL
    # The service creates its tables itself at start (in the public schema of its own database).
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$service" \
         -v service="$service" <<'SQL'
ALTER SCHEMA public OWNER TO :"service";
REVOKE ALL ON SCHEMA public FROM PUBLIC;
SQL
done
