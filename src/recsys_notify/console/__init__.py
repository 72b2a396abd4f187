"""The ops console inside the Airflow API server: the "Global medoids" page and the conf-key guard.

``views`` (pure: refresh frames in, page rows out), ``app`` (the FastAPI app the plugin mounts),
``conf_guard`` (refuses unknown trigger conf keys before a run exists).
"""
