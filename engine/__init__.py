"""Rapport's domain: events, the customer profile, the fold, defaults and decisions.

Pure: no I/O, no framework, no wall clock. Time always comes from events or is passed in.
"""
