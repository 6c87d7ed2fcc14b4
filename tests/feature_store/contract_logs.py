"""The logs' part of the store contract: `read_log` and `erased_digests`, what `rapport export`
(feature_store/offline/export.py) relies on.

`OnlineStoreContract` inherits it, so every backend runs it with the suite's fixtures (`store`,
`store_opener`, `new_backend`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta

import pytest

from engine.identity import Identity, IdentityType, customer_digest
from feature_store.base import LogPage, LogRecord, LogTable, OnlineStore
from feature_store.errors import DuplicateDecision
from tests.feature_store.contract_builders import (
    ACCEPTED,
    DUPLICATE,
    ROOMY,
    T0,
    StoreOpener,
    apply_one_by_one,
    contact,
    decision,
    exposure,
    withdrawal,
)

SECRET = b"log-contract-secret"


def read_all(
    store: OnlineStore, log: LogTable, *, after: int = 0, limit: int = 5
) -> list[LogRecord]:
    """Every entry of the log after `after`, page by page as the export reads it."""
    return [
        record for page in pages(store, log, after=after, limit=limit) for record in page.records
    ]


def pages(
    store: OnlineStore, log: LogTable, *, after: int = 0, limit: int = 5
) -> Iterator[LogPage]:
    while True:
        page = store.read_log(log, after, limit)
        yield page
        if len(page.records) < limit:
            return
        after = page.next_after


def microseconds(when: datetime) -> int:
    return (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def card(customer_id: str) -> Identity:
    return Identity(type=IdentityType.CARD, value=f"tok_of_{customer_id}")


class LogContract:
    """`read_log` and `erased_digests` (see `OnlineStore`), on the suite's fixtures."""

    def test_an_empty_log_reads_as_an_empty_page(self, store: OnlineStore) -> None:
        for log in ("events", "decisions"):
            assert store.read_log(log, 0, 10) == LogPage(records=[], next_after=0, high_water=0)
            assert store.read_log(log, 42, 10).next_after == 42
        assert store.erased_digests() == set()
        with pytest.raises(ValueError, match="limit"):
            store.read_log("events", 0, 0)

    def test_read_log_pages_through_each_log_in_seq_order(self, store: OnlineStore) -> None:
        events = [withdrawal(f"e-{day}", at=T0 + timedelta(days=day)) for day in range(3)] + [
            contact(f"c-{day}", "sms", at=T0 + timedelta(days=day)) for day in range(3)
        ]
        store.apply_events(events)
        for n in range(3):
            store.log_decision(decision(f"dec-{n}"))

        read = list(pages(store, "events", limit=4))

        seqs = [record.seq for page in read for record in page.records]
        assert [len(page.records) for page in read] == [4, 2]
        assert seqs == sorted(set(seqs))
        assert read[-1].next_after == seqs[-1] == read[0].high_water
        assert [record.event() for page in read for record in page.records] == events
        assert {record.status for page in read for record in page.records} == {"accepted"}
        assert store.read_log("events", seqs[-1], 4).records == []
        assert store.read_log("events", seqs[1], 2).records == read[0].records[2:4]
        decisions = store.read_log("decisions", 0, 10)
        assert [r.decision() for r in decisions.records] == [decision(f"dec-{n}") for n in range(3)]
        assert {r.status for r in decisions.records} == {None}

    def test_the_logs_hold_each_accepted_entry_once_as_it_was_accepted(
        self, store: OnlineStore
    ) -> None:
        first = withdrawal("e-1", customer_id="cust-1")
        late = contact("e-2", "sms", customer_id="cust-1", at=T0 - timedelta(days=30))
        other = withdrawal("x-1", customer_id="cust-2", at=T0 + timedelta(hours=1))
        resent = withdrawal("e-1", customer_id="cust-1", at=T0 + timedelta(hours=2), amount=50)
        assert store.apply_events([first, late, other, resent]) == [ACCEPTED] * 3 + [DUPLICATE]
        assert store.apply_events([first, other]) == [DUPLICATE] * 2
        given = decision("dec-1", customer_id="cust-1")
        store.record_decision(given, [exposure("dec-1", "cust-1")])
        changed = given.model_copy(update={"policy_version": "rules-2"})
        with pytest.raises(DuplicateDecision):
            store.log_decision(changed)
        with pytest.raises(DuplicateDecision):  # the same id for another customer
            store.log_decision(decision("dec-1", customer_id="cust-2"))
        store.log_decision(decision("dec-2", customer_id="anonymous"))

        events = read_all(store, "events")
        decisions = read_all(store, "decisions")

        accepted = [first, late, other, exposure("dec-1", "cust-1")]
        assert sorted((r.event() for r in events), key=accepted.index) == accepted
        kinds = [r.event().event_id.split(":")[0] for r in events if r.customer_id == "cust-1"]
        assert kinds == ["e-1", "e-2", "exposure"]  # a customer's entries in acceptance order
        assert {r.customer_id for r in events} == {"cust-1", "cust-2"}
        assert [r.at_us for r in events] == [microseconds(r.event().occurred_at) for r in events]
        by_id = {r.decision().decision_id: r for r in decisions}  # customers' order may differ
        assert len(decisions) == len(by_id) == 2
        assert by_id["dec-1"].decision() == given
        assert by_id["dec-2"].decision() == decision("dec-2", "anonymous")
        assert [by_id[d].customer_id for d in ("dec-1", "dec-2")] == ["cust-1", "anonymous"]
        assert {r.at_us for r in decisions} == {microseconds(given.decided_at)}

    def test_merged_entries_keep_their_seq_and_read_as_the_survivor(
        self, store: OnlineStore
    ) -> None:
        store.apply_events(
            [withdrawal("a-1", customer_id="cust-a"), contact("b-1", "sms", customer_id="cust-b")]
        )
        store.log_decision(decision("dec-b", customer_id="cust-b"))
        before = {r.seq: r.event().event_id for r in read_all(store, "events")}
        [decided] = read_all(store, "decisions")
        store.link_identities([card("a").hashed(SECRET)], "cust-a", at=T0)
        store.link_identities([card("b").hashed(SECRET)], "cust-b", at=T0)

        link = store.link_identities(
            [card("a").hashed(SECRET), card("b").hashed(SECRET)], None, at=T0
        )
        assert (link.customer_id, link.merged) == ("cust-a", ["cust-b"])
        store.apply_events([contact("b-2", "email", customer_id="cust-b", at=T0 + timedelta(1))])

        events = read_all(store, "events")
        assert {r.seq: r.event().event_id for r in events if r.seq in before} == before
        assert [r.event().event_id for r in events if r.seq not in before] == ["b-2"]
        assert max(before) < min(r.seq for r in events if r.seq not in before)
        assert {r.customer_id for r in events} == {"cust-a"}
        assert {r.event().customer_id for r in events} == {"cust-a"}
        [merged] = read_all(store, "decisions")
        assert (merged.seq, merged.customer_id) == (decided.seq, "cust-a")
        assert merged.decision().customer_id == "cust-a"
        assert merged.decision().decision_id == "dec-b"

    def test_erasure_takes_the_customer_and_those_merged_into_it_out_of_the_logs(
        self, store: OnlineStore
    ) -> None:
        store.apply_events(
            [
                withdrawal("a-1", customer_id="cust-a"),
                contact("b-1", "sms", customer_id="cust-b"),
                withdrawal("k-1", customer_id="kept"),
            ]
        )
        store.log_decision(decision("dec-a", customer_id="cust-a"))
        store.log_decision(decision("dec-b", customer_id="cust-b"))
        store.log_decision(decision("dec-k", customer_id="kept"))
        highest = {log: max(r.seq for r in read_all(store, log)) for log in ("events", "decisions")}
        store.link_identities([card("a").hashed(SECRET)], "cust-a", at=T0)
        store.link_identities([card("a").hashed(SECRET)], "cust-b", at=T0)  # a merged into b

        assert store.erase_customer("cust-b") is True

        assert [r.event().event_id for r in read_all(store, "events")] == ["k-1"]
        assert [r.decision().decision_id for r in read_all(store, "decisions")] == ["dec-k"]
        erased = store.erased_digests()
        assert {customer_digest("cust-a"), customer_digest("cust-b")} <= erased
        assert customer_digest("kept") not in erased
        store.apply_events([withdrawal("k-2", customer_id="kept")])
        store.log_decision(decision("dec-k2", customer_id="kept"))
        # A seq is never given twice: a reader resuming after the erased entries finds the new.
        later = read_all(store, "events", after=highest["events"])
        assert [r.event().event_id for r in later] == ["k-2"]
        later = read_all(store, "decisions", after=highest["decisions"])
        assert [r.decision().decision_id for r in later] == ["dec-k2"]
        assert store.erased_digests() == erased  # nothing erased since: the set only grows

    def test_a_reader_resuming_from_next_after_sees_every_entry_once_while_writers_write(
        self, store_opener: StoreOpener
    ) -> None:
        writers, per_writer = 4, 60
        read: list[LogRecord] = []
        done = threading.Event()
        errors: list[BaseException] = []
        start = threading.Barrier(writers + 1)

        def write(worker: int) -> None:
            events = [
                withdrawal(
                    f"w{worker}-{i}",
                    customer_id=f"cust-{worker}-{i % 5}",
                    at=T0 + timedelta(seconds=i * writers + worker),
                )
                for i in range(per_writer)
            ]
            try:
                start.wait(timeout=30)
                apply_one_by_one(store, events)
            except BaseException as exc:
                errors.append(exc)

        def follow() -> None:
            # As an export run repeated while the writers write: resume from next_after.
            after = 0
            try:
                start.wait(timeout=30)
                while True:
                    finished = done.is_set()
                    page = store.read_log("events", after, 7)
                    read.extend(page.records)
                    after = page.next_after
                    if finished and len(page.records) < 7:
                        return
            except BaseException as exc:
                errors.append(exc)

        with closing(store_opener(ROOMY)) as store:
            threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
            reader = threading.Thread(target=follow)
            for thread in [*threads, reader]:
                thread.start()
            for thread in threads:
                thread.join(timeout=300)
            done.set()
            reader.join(timeout=300)

            assert errors == []
            seqs = [record.seq for record in read]
            assert seqs == sorted(set(seqs))  # increasing: nothing seen twice
            ids = [record.event().event_id for record in read]
            expected = {f"w{w}-{i}" for w in range(writers) for i in range(per_writer)}
            assert sorted(ids) == sorted(expected)  # nothing missed
            again = read_all(store, "events", limit=50)
            assert [(r.seq, r.event().event_id) for r in again] == list(zip(seqs, ids, strict=True))
