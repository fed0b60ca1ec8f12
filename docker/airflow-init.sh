#!/usr/bin/env bash
# One-off set-up, run by the airflow-init service (as root) before any other Airflow service
# starts (they wait for it with `condition: service_completed_successfully`):
#   1. create the shared folders and hand them to AIRFLOW_UID,
#   2. migrate Airflow's metadata database,
#   3. register the admin user with Airflow's simple auth manager (kept if it already exists),
#   4. create the pool that GPU tasks run in,
#   5. create the warehouse's outputs (`spendpred db init`).
# Safe to rerun. Airflow commands go through the image's /entrypoint, which waits for the
# database and sets up the Python path when running as root.
set -euo pipefail

: "${AIRFLOW_UID:?AIRFLOW_UID must be set (docker-compose.yaml sets it)}"
: "${AIRFLOW_ADMIN_USERNAME:?AIRFLOW_ADMIN_USERNAME must be set}"
: "${AIRFLOW_ADMIN_PASSWORD:?AIRFLOW_ADMIN_PASSWORD must be set}"
: "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?the simple auth manager passwords file must be set}"
: "${SPENDPRED_STAGING_DIR:?SPENDPRED_STAGING_DIR must be set}"

passwords_file="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE}"

echo "Creating the shared folders for user ${AIRFLOW_UID}:0"
shared_dirs=(
    /opt/airflow/logs
    "$(dirname "${passwords_file}")"
    "${SPENDPRED_HOME:-/opt/spendpred/data}"
    "${SPENDPRED_STAGING_DIR}"
)
for dir in "${shared_dirs[@]}"; do
    mkdir -p "${dir}"
    chown -R "${AIRFLOW_UID}:0" "${dir}"
done

echo "Migrating the Airflow metadata database"
/entrypoint airflow db migrate

echo "Registering the admin user '${AIRFLOW_ADMIN_USERNAME}' with the simple auth manager"
# The file maps user name -> password (JSON); the API server reads it and only generates
# passwords for users missing from it. Only the standard library is needed here.
python - <<'PY'
import json
import os
from pathlib import Path

path = Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
user = os.environ["AIRFLOW_ADMIN_USERNAME"]
text = path.read_text().strip() if path.exists() else ""
passwords = json.loads(text or "{}")
if user in passwords:
    print(f"user {user!r} already exists; password left unchanged")
else:
    passwords[user] = os.environ["AIRFLOW_ADMIN_PASSWORD"]
    path.write_text(json.dumps(passwords) + "\n")
    print(f"user {user!r} created")
PY
chown "${AIRFLOW_UID}:0" "${passwords_file}"
chmod 600 "${passwords_file}"

echo "Creating the pool '${AIRFLOW_GPU_POOL:-gpu}' (${AIRFLOW_GPU_POOL_SLOTS:-1} slots)"
/entrypoint airflow pools set "${AIRFLOW_GPU_POOL:-gpu}" "${AIRFLOW_GPU_POOL_SLOTS:-1}" "GPU training tasks (queue gpu)"

echo "Creating the warehouse's spendpred schema, tables and views (idempotent)"
/entrypoint spendpred db init

/entrypoint airflow version
echo "airflow-init finished"
