"""Shared by the store tests: the contract module's asserts report their operands."""

import pytest

# The contract is a helper module, not a test module, so pytest would not rewrite its asserts
# (no values in failure messages) unless told before it is imported.
pytest.register_assert_rewrite(
    "tests.feature_store.contract",
    "tests.feature_store.contract_logs",
    "tests.feature_store.contract_builders",
)
