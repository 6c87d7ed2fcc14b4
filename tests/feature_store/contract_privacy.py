"""The identity and privacy part of the store contract: links, merges, export, erasure.

Mixed into each backend's contract class next to `OnlineStoreContract`; it uses the same
`new_backend` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta

import pytest

from engine.config import EngineConfig
from engine.fold import fold
from engine.identity import Identity, IdentityType
from feature_store.base import AppendStatus, OnlineStore
from feature_store.errors import CustomerErased
from tests.engine.builders import canonical
from tests.feature_store.contract import T0, NewBackend, contact, decision, withdrawal

SECRET = b"contract-test-secret"


def email(value: str) -> Identity:
    return Identity(type=IdentityType.EMAIL, value=value)


def card(value: str) -> Identity:
    return Identity(type=IdentityType.CARD, value=value)


class IdentityPrivacyContract:
    @pytest.fixture
    def privacy_store(self, new_backend: NewBackend) -> Iterator[OnlineStore]:
        with closing(new_backend()(EngineConfig())) as store:
            yield store

    def test_identifiers_resolve_to_the_customer_they_were_linked_to(
        self, privacy_store: OnlineStore
    ) -> None:
        ann = email("Ann@Example.com").hashed(SECRET)
        assert privacy_store.resolve_identity(ann) is None
        link = privacy_store.link_identities([ann], "cust-1", at=T0)
        assert (link.customer_id, link.created, link.merged) == ("cust-1", False, [])
        assert privacy_store.resolve_identity(email("ann@example.com").hashed(SECRET)) == "cust-1"

    def test_unknown_identifiers_create_a_new_customer(self, privacy_store: OnlineStore) -> None:
        link = privacy_store.link_identities([card("tok_4242").hashed(SECRET)], None, at=T0)
        assert link.created
        assert privacy_store.resolve_identity(card("tok_4242").hashed(SECRET)) == link.customer_id
        again = privacy_store.link_identities([card("tok_4242").hashed(SECRET)], None, at=T0)
        assert (again.customer_id, again.created) == (link.customer_id, False)

    def test_linking_two_known_customers_merges_their_histories(
        self, privacy_store: OnlineStore
    ) -> None:
        atm = [
            withdrawal(f"a{i}", customer_id="cust-a", at=T0 + timedelta(days=i)) for i in range(4)
        ]
        web = [
            contact(f"w{i}", "sms", customer_id="cust-b", at=T0 + timedelta(days=i))
            for i in range(3)
        ]
        privacy_store.apply_events([*atm, *web])
        privacy_store.link_identities([card("tok_0001").hashed(SECRET)], "cust-a", at=T0)
        privacy_store.link_identities([email("b@example.com").hashed(SECRET)], "cust-b", at=T0)

        link = privacy_store.link_identities(
            [card("tok_0001").hashed(SECRET), email("b@example.com").hashed(SECRET)], None, at=T0
        )
        assert (link.customer_id, link.merged) == ("cust-a", ["cust-b"])
        merged = privacy_store.read_profile("cust-a")
        assert merged is not None
        assert merged.event_count == 7
        assert set(merged.contact_channels) == {"sms"}
        assert merged.habits
        # The absorbed id reads, and writes, as the survivor.
        assert privacy_store.read_profile("cust-b") == merged
        [status] = privacy_store.apply_events([contact("w9", "email", customer_id="cust-b")])
        assert status is AppendStatus.ACCEPTED
        assert privacy_store.read_profile("cust-a").event_count == 8  # type: ignore[union-attr]
        assert len(privacy_store.customer_events("cust-a")) == 8
        assert privacy_store.resolve_identity(email("b@example.com").hashed(SECRET)) == "cust-a"

    def test_the_merged_profile_equals_folding_both_histories(
        self, privacy_store: OnlineStore
    ) -> None:
        atm = [
            withdrawal(f"a{i}", customer_id="cust-a", at=T0 + timedelta(days=i)) for i in range(4)
        ]
        web = [
            contact(f"w{i}", "sms", customer_id="cust-b", at=T0 + timedelta(hours=i))
            for i in range(3)
        ]
        privacy_store.apply_events([*atm, *web])
        privacy_store.link_identities([card("tok_t001").hashed(SECRET)], "cust-a", at=T0)
        # The named customer survives: cust-a, which the card resolved to, merges into cust-b.
        link = privacy_store.link_identities([card("tok_t001").hashed(SECRET)], "cust-b", at=T0)
        assert (link.customer_id, link.merged) == ("cust-b", ["cust-a"])
        as_b = [e.model_copy(update={"customer_id": "cust-b"}) for e in [*atm, *web]]
        merged = privacy_store.read_profile("cust-b")
        assert merged is not None
        assert canonical(merged) == canonical(fold(None, as_b))

    def test_export_holds_everything_and_no_raw_identifier(
        self, privacy_store: OnlineStore
    ) -> None:
        privacy_store.apply_events([withdrawal("e1", customer_id="cust-1")])
        privacy_store.link_identities([email("ann@example.com").hashed(SECRET)], "cust-1", at=T0)
        privacy_store.log_decision(decision("dec-1", customer_id="cust-1"))
        export = privacy_store.export_customer("cust-1")
        assert export is not None
        assert export.profile is not None
        assert export.profile.event_count == 1
        assert [e.event_id for e in export.events] == ["e1"]
        assert [d.decision_id for d in export.decisions] == ["dec-1"]
        [identity] = export.identities
        assert (identity.type, identity.masked) == (IdentityType.EMAIL, "a***@example.com")
        assert "ann@example.com" not in export.model_dump_json()
        assert privacy_store.export_customer("nobody") is None

    def test_erasure_removes_everything_and_replays_cannot_bring_the_customer_back(
        self, privacy_store: OnlineStore
    ) -> None:
        history = [
            withdrawal(f"e{i}", customer_id="cust-1", at=T0 + timedelta(days=i)) for i in range(3)
        ]
        privacy_store.apply_events(history)
        privacy_store.link_identities([email("ann@example.com").hashed(SECRET)], "cust-1", at=T0)
        privacy_store.log_decision(decision("dec-1", customer_id="cust-1"))

        assert privacy_store.erase_customer("cust-1") is True
        assert privacy_store.read_profile("cust-1") is None
        assert privacy_store.customer_events("cust-1") == []
        assert privacy_store.read_decision("dec-1") is None
        assert privacy_store.export_customer("cust-1") is None
        assert privacy_store.resolve_identity(email("ann@example.com").hashed(SECRET)) is None
        assert privacy_store.apply_events(history) == [AppendStatus.ERASED] * 3
        assert privacy_store.read_profile("cust-1") is None
        with pytest.raises(CustomerErased):
            privacy_store.link_identities([card("x-1234").hashed(SECRET)], "cust-1", at=T0)
        assert privacy_store.erase_customer("cust-1") is False  # idempotent

    def test_erasing_a_survivor_erases_the_customers_merged_into_it(
        self, privacy_store: OnlineStore
    ) -> None:
        privacy_store.apply_events(
            [withdrawal("a1", customer_id="cust-a"), contact("b1", "sms", customer_id="cust-b")]
        )
        privacy_store.link_identities([card("tok_t001").hashed(SECRET)], "cust-a", at=T0)
        privacy_store.link_identities([card("tok_t001").hashed(SECRET)], "cust-b", at=T0)
        privacy_store.erase_customer("cust-a")  # the absorbed id names the same person
        assert privacy_store.read_profile("cust-b") is None
        for customer in ("cust-a", "cust-b"):
            event = contact(f"{customer}-late", "sms", customer_id=customer)
            assert privacy_store.apply_events([event]) == [AppendStatus.ERASED]
