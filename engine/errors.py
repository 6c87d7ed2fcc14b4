"""Errors raised by the domain."""


class EngineError(Exception):
    """Base class of the domain's errors."""


class UnknownOutcomeTarget(EngineError):
    """An outcome names an item that the decision did not return."""
