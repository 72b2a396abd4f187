"""Global medoids: KMeans over every user medoid, one representative per (cluster, language), ops overrides.

``medoids`` (KMeans, stable ids, representatives), ``overrides`` (the audit-trail history),
``params`` (the override request, light enough for DAG files), ``templates`` (automatic templates),
``step`` (the ``run`` the DAG and CLI call).
"""
