# Source this file to point Airflow and spendpred at the embedded defaults under var/:
#   . scripts/airflow-env.sh && airflow standalone
# Used by scripts/demo.sh and `make airflow`. Values already set in the environment win.
ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}

# The virtual environment's bin/ goes first on PATH: `airflow standalone` starts its components
# as plain `airflow` from PATH, so they must find the venv's executable without an activated venv.
# VENV is absolute or relative to the repository root (default .venv).
VENV=${VENV:-.venv}
case $VENV in
    /*) SPENDPRED_VENV_BIN=$VENV/bin ;;
    *) SPENDPRED_VENV_BIN=$ROOT/$VENV/bin ;;
esac
case $PATH in
    "$SPENDPRED_VENV_BIN" | "$SPENDPRED_VENV_BIN":*) ;;
    *) export PATH="$SPENDPRED_VENV_BIN${PATH:+:$PATH}" ;;
esac

export SPENDPRED_HOME=${SPENDPRED_HOME:-$ROOT/var}
export AIRFLOW_HOME=${AIRFLOW_HOME:-$SPENDPRED_HOME/airflow}
export AIRFLOW__CORE__DAGS_FOLDER=${AIRFLOW__CORE__DAGS_FOLDER:-$ROOT/dags}
export AIRFLOW__CORE__PLUGINS_FOLDER=${AIRFLOW__CORE__PLUGINS_FOLDER:-$ROOT/plugins}
export AIRFLOW__CORE__LOAD_EXAMPLES=${AIRFLOW__CORE__LOAD_EXAMPLES:-False}
# Airflow's default logging, plus filters for two library warnings (plugins/spendpred_logging.py)
export AIRFLOW__LOGGING__LOGGING_CONFIG_CLASS=${AIRFLOW__LOGGING__LOGGING_CONFIG_CLASS:-spendpred_logging.LOGGING_CONFIG}
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-sqlite:///$AIRFLOW_HOME/airflow.db}

# Local development listens on the loopback interface only (Airflow's default is 0.0.0.0).
# The LocalExecutor's task processes reach the Execution API on the same address and port.
export AIRFLOW__API__HOST=${AIRFLOW__API__HOST:-127.0.0.1}
export AIRFLOW__API__PORT=${AIRFLOW__API__PORT:-8080}
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=${AIRFLOW__CORE__EXECUTION_API_SERVER_URL:-http://$AIRFLOW__API__HOST:$AIRFLOW__API__PORT/execution/}
# Login stays on: `airflow standalone` uses the SimpleAuthManager with one user, admin, whose
# generated password is kept in $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated.
# Airflow creates that file with the process umask (world-readable under the usual 022), so it
# is created here first, empty, readable by its owner only (0600); Airflow then writes the
# password into it and keeps its mode. A file left readable by an older start is narrowed too.
SPENDPRED_PASSWORDS_FILE=${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated}

# Size Airflow to the machine instead of its default of 32 LocalExecutor workers: half as many
# task slots as cores (at least 1), and each task's torch threads = cores / slots, so that
# threads x concurrent tasks never exceed the cores (2 cores: 1 slot with 2 threads).
SPENDPRED_CORES=$(nproc 2>/dev/null || echo 2)
export AIRFLOW__CORE__PARALLELISM=${AIRFLOW__CORE__PARALLELISM:-$(( SPENDPRED_CORES / 2 > 0 ? SPENDPRED_CORES / 2 : 1 ))}
export SPENDPRED_CONCURRENT_TASKS=${SPENDPRED_CONCURRENT_TASKS:-$AIRFLOW__CORE__PARALLELISM}

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GX_ANALYTICS_ENABLED=False MLFLOW_DISABLE_TELEMETRY=true
mkdir -p "$AIRFLOW_HOME" "$(dirname "$SPENDPRED_PASSWORDS_FILE")"
(umask 077 && touch "$SPENDPRED_PASSWORDS_FILE" && chmod 600 "$SPENDPRED_PASSWORDS_FILE")
