"""Generic embedding model (GEM): maps content embeddings into a collaborative space.

Modules: ``data`` (check and convert items, pairs, interactions), ``model`` (the torch network),
``objectives`` (pair-contrastive and ALS-distillation training), ``evaluation`` (cold-start
recall and precision), ``step`` (the ``run`` the DAG and CLI call).
Kept import-free so importing the package does not load torch.
"""
