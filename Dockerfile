# The spendpred image: the official Apache Airflow image plus the project's pinned
# dependencies, the spendpred package, the DAGs, the UI plugin and the SQL files.
# docker-compose.yaml runs every Airflow component and the MLflow server from it.
#
#   docker compose build        (or: docker build -t spendpred-airflow:0.1.0 .)
#
# Keep the tag in step with `apache-airflow==` in requirements.txt
# (tests/integration/test_compose.py checks it).
FROM apache/airflow:3.3.2-python3.11

# Folders owned by the airflow user (uid 50000, gid 0); named volumes mounted on them start
# with this ownership.
USER root
RUN mkdir -p /opt/spendpred/bin /opt/spendpred/data/staging /opt/spendpred/mlartifacts \
    && chown -R airflow:0 /opt/spendpred
USER airflow

# Dependencies first, so code changes do not reinstall them. The exact pins of the developer
# machines are kept; torch==2.13.0 resolves to the CUDA wheel from PyPI here (the CPU build
# on the developer machines), so the same image serves the CPU and the GPU workers.
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/spendpred/
RUN pip install --no-cache-dir -r /opt/spendpred/requirements.txt -c /opt/spendpred/constraints.txt

# The package itself, without dependencies (installed above). Installed in editable mode
# from /opt/spendpred, as on the developer machines, so the package finds the SQL files in
# /opt/spendpred/sql beside it.
COPY --chown=airflow:0 pyproject.toml /opt/spendpred/
COPY --chown=airflow:0 spendpred/ /opt/spendpred/spendpred/
COPY --chown=airflow:0 sql/ /opt/spendpred/sql/
RUN pip install --no-cache-dir --no-deps --editable /opt/spendpred \
    && python -c "import spendpred, airflow.providers.celery, airflow.providers.postgres"

COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 docker/airflow-init.sh /opt/spendpred/bin/airflow-init.sh
