"""Channels: the kinds of touchpoint, and those through which the company can reach out.

Its own module because both events (where an event happened) and preferences (the contact
channel a customer states) need it, and neither should import the other for it.
"""

from __future__ import annotations

from enum import StrEnum


class Channel(StrEnum):
    """The kind of touchpoint an event happened at, or a channel to contact a customer by."""

    ATM = "atm"
    WEB = "web"
    MOBILE_APP = "mobile_app"
    CALL_CENTER = "call_center"
    BRANCH = "branch"
    EMAIL = "email"
    SMS = "sms"
    CHAT = "chat"
    SOCIAL = "social"
    IOT = "iot"


#: Channels through which the company can reach out to a customer.
CONTACT_CHANNELS: tuple[Channel, ...] = (
    Channel.CALL_CENTER,
    Channel.EMAIL,
    Channel.SMS,
    Channel.MOBILE_APP,
    Channel.CHAT,
)
