-- One PostgreSQL server, two databases: Airflow metadata (POSTGRES_DB) and the MLflow backend store.
CREATE DATABASE mlflow;
