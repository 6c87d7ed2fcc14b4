"""Errors raised by the domain."""


class EngineError(Exception):
    """Base class of the domain's errors."""


class UnknownOutcomeTarget(EngineError):
    """An outcome names an item that the decision did not return."""


class InvalidPreference(EngineError, ValueError):
    """A stated preference has an unknown key or a value the key does not allow."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"preference {key!r} {reason}")
        self.key = key
        self.reason = reason
