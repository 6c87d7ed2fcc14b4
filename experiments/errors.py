"""Errors raised by the experiments package."""


class ExperimentsError(Exception):
    """Base class of the experiments package's errors."""


class InvalidUnits(ExperimentsError, ValueError):
    """A per-unit frame (or its analysis options) cannot be analysed as given.

    The message names the offending column or variant.
    """


class InvalidWeights(ExperimentsError, ValueError):
    """Traffic weights are empty, negative, non-finite or sum to zero."""


class InvalidLogs(ExperimentsError, ValueError):
    """Logged decisions for off-policy evaluation have bad shapes or propensities.

    The message names the offending argument.
    """
