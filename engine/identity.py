"""Identifiers a customer is known by (card, IBAN, email, phone, device, CRM id).

Values are normalised, then kept only as a keyed digest (HMAC-SHA256 with a server secret)
and a masked form for people (`j***@example.com`), so the store can resolve an identifier
without ever holding it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator


class IdentityType(StrEnum):
    CARD = "card"
    IBAN = "iban"
    EMAIL = "email"
    PHONE = "phone"
    DEVICE = "device"
    CRM = "crm"


_PATTERNS: dict[IdentityType, re.Pattern[str]] = {
    IdentityType.CARD: re.compile(r"^[A-Za-z0-9_-]{6,64}$"),
    IdentityType.IBAN: re.compile(r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$"),
    IdentityType.EMAIL: re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$"),
    IdentityType.PHONE: re.compile(r"^\+?[0-9]{6,15}$"),
    IdentityType.DEVICE: re.compile(r"^[A-Za-z0-9._:@-]{1,128}$"),
    IdentityType.CRM: re.compile(r"^[A-Za-z0-9._:@-]{1,128}$"),
}


def _normalise(kind: IdentityType, value: str) -> str:
    value = value.strip()
    if kind is IdentityType.EMAIL:
        return value.lower()
    if kind is IdentityType.PHONE:
        return re.sub(r"[\s().-]", "", value)
    if kind is IdentityType.IBAN:
        return value.replace(" ", "").upper()
    if kind is IdentityType.CARD:
        return value.replace(" ", "")
    return value


class Identity(BaseModel):
    """An identifier as a touchpoint sends it: `{"type": "email", "value": "ann@example.com"}`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: IdentityType
    value: str = Field(min_length=1, max_length=256)

    @model_validator(mode="after")
    def _normalised_and_valid(self) -> Identity:
        value = _normalise(self.type, self.value)
        if not _PATTERNS[self.type].match(value):
            raise ValueError(f"not a valid {self.type.value} identifier")
        object.__setattr__(self, "value", value)
        return self

    def hashed(self, secret: bytes) -> HashedIdentity:
        digest = hmac.new(secret, f"{self.type.value}:{self.value}".encode(), hashlib.sha256)
        return HashedIdentity(type=self.type, digest=digest.hexdigest(), masked=self.masked())

    def masked(self) -> str:
        """A form a person can recognise that does not reveal the identifier."""
        value = self.value
        if self.type is IdentityType.EMAIL:
            local, _, domain = value.partition("@")
            return f"{local[0]}***@{domain}"
        if self.type is IdentityType.IBAN:
            return f"{value[:4]}****{value[-4:]}"
        if self.type in (IdentityType.CARD, IdentityType.PHONE):
            return f"***{value[-4:]}"
        return f"{value[:2]}***"


class HashedIdentity(BaseModel):
    """What the store keeps of an identifier."""

    model_config = ConfigDict(frozen=True)

    type: IdentityType
    digest: str = Field(description="HMAC-SHA256 of 'type:value' with the server's secret.")
    masked: str


class LinkedIdentity(HashedIdentity):
    customer_id: str
    linked_at: datetime


def customer_digest(customer_id: str) -> str:
    """What an erasure record keeps of a customer id: a one-way digest, no personal data."""
    return hashlib.sha256(f"erased:{customer_id}".encode()).hexdigest()
