# Production image: the official Airflow 3.3.2 image plus the SDC's DAGs, plugins, SQL and configs.
#   docker build -t emm-sdc:latest .
# The reference processors are included so the `local` runner works; ITF processors normally run
# as their own images (docker/batch runners, see docs/itf_container_contract.md).
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}

COPY --chown=airflow:root requirements.txt constraints.txt /opt/emm-sdc/
RUN pip install --no-cache-dir "apache-airflow==3.3.2" -r /opt/emm-sdc/requirements.txt \
        -c /opt/emm-sdc/constraints.txt

COPY --chown=airflow:root dags/ /opt/airflow/dags/
COPY --chown=airflow:root plugins/ /opt/airflow/plugins/
COPY --chown=airflow:root include/ /opt/airflow/include/
COPY --chown=airflow:root processors/ /opt/airflow/processors/

# Layout: project root = /opt/airflow (dags/, plugins/, include/, processors/).
ENV EMM_PROJECT_ROOT=/opt/airflow \
    EMM_WORK_DIR=/opt/airflow/work \
    PYTHONPATH=/opt/airflow/plugins
