# Source this file to point Airflow and spendpred at the embedded defaults under var/:
#   . scripts/airflow-env.sh && airflow standalone
# Used by scripts/demo.sh and `make airflow`. Values already set in the environment win.
ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
export SPENDPRED_HOME=${SPENDPRED_HOME:-$ROOT/var}
export AIRFLOW_HOME=${AIRFLOW_HOME:-$SPENDPRED_HOME/airflow}
export AIRFLOW__CORE__DAGS_FOLDER=${AIRFLOW__CORE__DAGS_FOLDER:-$ROOT/dags}
export AIRFLOW__CORE__PLUGINS_FOLDER=${AIRFLOW__CORE__PLUGINS_FOLDER:-$ROOT/plugins}
export AIRFLOW__CORE__LOAD_EXAMPLES=${AIRFLOW__CORE__LOAD_EXAMPLES:-False}
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-sqlite:///$AIRFLOW_HOME/airflow.db}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GX_ANALYTICS_ENABLED=False MLFLOW_DISABLE_TELEMETRY=true
mkdir -p "$AIRFLOW_HOME"
