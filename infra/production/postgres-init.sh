#!/bin/bash
# First start of the PostgreSQL volume only (docker-entrypoint-initdb.d): one role and one database
# each for MLflow and Prefect, a database for MLflow's users and permissions (basic-auth), and a
# read-only role for the viewers' MLflow (mlflow-read: SELECT only, so no request that reaches it
# can change the registry, whatever credentials it carries). The passwords come from the
# container's environment (secrets), never from this file.
set -euo pipefail
: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD is not set}"
: "${MLFLOW_READER_DB_PASSWORD:?MLFLOW_READER_DB_PASSWORD is not set}"
: "${PREFECT_DB_PASSWORD:?PREFECT_DB_PASSWORD is not set}"
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" \
     -v mlflow_password="$MLFLOW_DB_PASSWORD" -v reader_password="$MLFLOW_READER_DB_PASSWORD" \
     -v prefect_password="$PREFECT_DB_PASSWORD" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
CREATE ROLE mlflow_reader LOGIN PASSWORD :'reader_password';
CREATE ROLE prefect LOGIN PASSWORD :'prefect_password';
CREATE DATABASE prefect OWNER prefect;
SQL
for db in mlflow mlflow_auth; do
  psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "$db" <<SQL
GRANT CONNECT ON DATABASE $db TO mlflow_reader;
GRANT USAGE ON SCHEMA public TO mlflow_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE mlflow IN SCHEMA public GRANT SELECT ON TABLES TO mlflow_reader;
SQL
done
