"""Training: datasets, models, evaluation and registry, and the synthetic population."""
