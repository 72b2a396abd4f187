# recsys-notify on the official Airflow image: the same image runs every Airflow component,
# the Celery worker (pipeline steps) and the MLflow server (mlflow, boto3 and psycopg2 are inside).
FROM apache/airflow:3.3.2-python3.11

USER airflow
WORKDIR /opt/recsys
# Dependencies first (cached layer), then the code. torch comes as the CPU wheel pinned in constraints.txt.
COPY --chown=airflow:0 pyproject.toml constraints.txt README.md ./
COPY --chown=airflow:0 src ./src
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu \
        -c constraints.txt "apache-airflow==${AIRFLOW_VERSION}" . \
 && python -c "import recsys_notify, airflow; print('recsys-notify on airflow', airflow.__version__)"

COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 plugins /opt/airflow/plugins
# Settings' relative paths (configs/templates.yaml, configs/two_tower) resolve against the working directory.
COPY --chown=airflow:0 configs /opt/airflow/configs
WORKDIR /opt/airflow
