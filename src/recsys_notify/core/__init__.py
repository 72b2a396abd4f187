"""Shared infrastructure every step uses: the dataset catalogue, storage, input resolution, the data
contract, config, the SQL engine, tracking, embeddings, clustering, interaction weights, hashing,
templates, the step contract and the Airflow helpers."""
