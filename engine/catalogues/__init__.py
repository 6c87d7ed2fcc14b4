"""Example action catalogues shipped with Rapport (YAML, loaded by engine.catalogue)."""
