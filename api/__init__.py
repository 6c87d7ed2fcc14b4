"""The HTTP API, its settings and the `rapport` command line."""
