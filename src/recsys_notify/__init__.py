"""recsys-notify: one personalised push notification a day per user, chosen from long-term interests.

``core`` holds the shared infrastructure; ``pair_mining``, ``gem``, ``user_medoids``, ``global_medoids``,
``notifications`` and ``two_tower`` are the pipeline steps, one package each of the same shape
(``step.py`` does the I/O, the other modules compute); ``cli``, ``demo`` and ``synthetic`` are tools.
"""
