"""The Redis store's configuration: where Redis is, how long to wait for it, how much to keep.

Beside the store, and imported by every Redis module that needs it (connection, identity), so
that none of them imports the store back.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from feature_store.keys import DEFAULT_PREFIX, PREFIX_PATTERN

_DAY = 86_400


class RedisStoreConfig(BaseModel):
    """Where the Redis store is, how long it waits for it, and how much it keeps online."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["redis", "redis+cluster"] = "redis"
    url: str = Field(
        repr=False,  # it may carry a password
        description="A redis-py URL: redis://[[user]:password@]host:port[/db]; for a cluster, "
        "any one node (redis://host:port), the others are discovered.",
    )
    key_prefix: str = Field(DEFAULT_PREFIX, description="Namespace of every key.")
    socket_timeout_seconds: float = Field(0.25, gt=0, description="Per command, in seconds.")
    socket_connect_timeout_seconds: float = Field(0.25, gt=0, description="In seconds.")
    retries: int = Field(1, ge=0, le=10, description="Retries of a command after a lost link.")
    backoff_base_seconds: float = Field(0.02, gt=0, description="First retry's backoff, s.")
    backoff_cap_seconds: float = Field(0.2, gt=0, description="Longest backoff, in seconds.")
    max_connections: int = Field(64, ge=1, description="Per process (per node on a cluster).")
    max_commit_attempts: int = Field(
        50, ge=1, description="Optimistic attempts of one customer's update before a 503."
    )
    dedup_window_seconds: float = Field(
        7 * _DAY, gt=0, description="How long an accepted event id is remembered, in seconds."
    )
    event_log_cap: int = Field(1000, ge=1, description="Latest events kept per customer.")
    log_retention_entries: int | None = Field(
        None,
        ge=1,
        description="Entries each log shard keeps at most (about: trimmed by whole stream "
        "nodes), exported or not; None keeps them until an export acknowledges them.",
    )
    decision_ttl_seconds: int = Field(90 * _DAY, ge=1, description="Decision log TTL, s.")
    compress_min_bytes: int = Field(
        256, ge=0, description="Profiles and decisions from this size (bytes) are compressed."
    )

    @field_validator("key_prefix")
    @classmethod
    def _prefix_keeps_the_hash_tag(cls, prefix: str) -> str:
        if not PREFIX_PATTERN.match(prefix):
            raise ValueError(f"must match {PREFIX_PATTERN.pattern}")
        return prefix
