#!/usr/bin/env bash
# Run by the postgres image the first time the warehouse starts on an empty volume
# (scripts in /docker-entrypoint-initdb.d never run again; to rerun, remove the
# warehouse-db volume). Creates the role and the database that the MLflow server uses
# as its backend store, next to the `warehouse` database.
# Values come from MLFLOW_DB_NAME / MLFLOW_DB_USER / MLFLOW_DB_PASSWORD and are passed as
# psql variables, so they are quoted by psql rather than pasted into the SQL.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER}" --dbname "${POSTGRES_DB}" \
    --set=db_name="${MLFLOW_DB_NAME:-mlflow}" \
    --set=db_user="${MLFLOW_DB_USER:-mlflow}" \
    --set=db_password="${MLFLOW_DB_PASSWORD:-mlflow}" <<'EOSQL'
CREATE ROLE :"db_user" LOGIN PASSWORD :'db_password';
CREATE DATABASE :"db_name" OWNER :"db_user";
EOSQL
