"""The production topology of docker-compose.yaml on one machine, without Docker (``make stack``).

PostgreSQL (Airflow metadata, MLflow backend), Redis (Celery broker), moto's S3 server (data root,
MLflow artifacts), an MLflow tracking server, and Airflow's api-server, scheduler, dag-processor,
triggerer and two Celery workers. See docs/operations.md.
"""
