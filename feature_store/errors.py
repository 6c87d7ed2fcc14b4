"""Errors raised by stores."""


class StoreError(Exception):
    """Base class of the store errors."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or did not answer in time; the caller may retry later.

    `retry_after` is a hint in seconds.
    """

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnsupportedStoreUrl(StoreError):
    """`RAPPORT_STORE` names a scheme no store implements."""


class DuplicateDecision(StoreError):
    """A decision with this `decision_id` is already in the decision log; the log is append-only."""


class CustomerErased(StoreError):
    """The customer was erased; nothing may be stored for them again."""


class UnsupportedCapability(StoreError):
    """The store does not implement an optional capability (e.g. reading its logs in order).

    Raised instead of faking the capability; the message names the store and the method.
    """
