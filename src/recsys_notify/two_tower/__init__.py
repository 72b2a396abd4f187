"""Two-tower ranker: config-driven experiments, MIND-style evaluation, baselines and the registry gate."""
