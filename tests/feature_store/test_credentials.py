"""The `CredentialStore` contract, run on real SQLite, a real redis-server and a real (one-node)
Redis Cluster; then issuing keys, and the store URLs."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from pydantic import ValidationError

from feature_store.credentials import (
    ApiKey,
    CredentialStore,
    DuplicateKey,
    DuplicateKeyName,
    Scope,
    authenticate,
    hash_key,
    is_well_formed,
    issue_key,
)
from feature_store.errors import StoreUnavailable, UnsupportedStoreUrl
from feature_store.factory import open_credentials
from feature_store.redis.credentials import RedisCredentialStore
from feature_store.sqlite.credentials import SQLiteCredentialStore
from feature_store.sqlite.store import SCHEMA_VERSION, SQLiteStore, SQLiteStoreConfig
from tests.feature_store.contract import CONFIG, withdrawal
from tests.feature_store.redis_servers import free_port

T0 = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)

#: Opens another handle on one empty backend, each time it is called.
Opener = Callable[[], CredentialStore]


# -- real Redis, started for this module --------------------------------------------------------


def _redis_server(folder: Path, *, cluster: bool) -> tuple[subprocess.Popen[bytes], int]:
    """A `redis-server` on a free loopback port in `folder`, answering PING (and, as a
    one-node cluster, serving every slot)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not on PATH: these tests run against a real server")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port(with_cluster_bus=cluster)  # a node's bus port is port + 10000
    arguments = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
    arguments += ["--save", "", "--appendonly", "no", "--logfile", "redis.log"]
    if cluster:
        arguments += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    process = subprocess.Popen(arguments, stdin=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, decode_responses=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            with suppress(redis.ConnectionError):
                if client.ping():
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {folder / 'redis.log'}")
            time.sleep(0.02)
        if cluster:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
            while "cluster_state:ok" not in str(client.execute_command("CLUSTER", "INFO")):
                if time.monotonic() > deadline:
                    raise RuntimeError("the one-node cluster did not become ready")
                time.sleep(0.05)
    except BaseException:
        process.terminate()
        process.wait(timeout=10)
        raise
    finally:
        client.close()
    return process, port


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    process, port = _redis_server(tmp_path_factory.mktemp("redis"), cluster=False)
    yield port
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    process, port = _redis_server(tmp_path_factory.mktemp("redis-cluster"), cluster=True)
    yield port
    process.terminate()
    process.wait(timeout=10)


def _flush(port: int) -> None:
    with closing(redis.Redis(host="127.0.0.1", port=port)) as client:
        client.flushall()


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis+cluster", marks=pytest.mark.redis),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """An opener of an empty backend of each kind; every store it opened is closed after."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'rapport.db'}"
    elif request.param == "redis":
        port = request.getfixturevalue("redis_port")
        _flush(port)
        url = f"redis://127.0.0.1:{port}/0"
    else:
        port = request.getfixturevalue("cluster_port")
        _flush(port)
        url = f"redis+cluster://127.0.0.1:{port}"
    opened: list[CredentialStore] = []

    def open_backend() -> CredentialStore:
        opened.append(open_credentials(url))
        return opened[-1]

    yield open_backend
    for store in opened:
        store.close()


@pytest.fixture
def store(backend: Opener) -> CredentialStore:
    return backend()


def saved(store: CredentialStore, name: str, *scopes: Scope, at: datetime = T0) -> str:
    key, record = issue_key(name, scopes or [Scope.DECISIONS], at=at)
    store.save(record)
    return key


def record_of(store: CredentialStore, key: str) -> ApiKey:
    record = store.find_by_hash(hash_key(key))
    assert record is not None
    return record


# -- the contract -------------------------------------------------------------------------------


def test_a_saved_key_is_found_by_its_hash_as_saved(store: CredentialStore) -> None:
    key, record = issue_key("atm-fleet", [Scope.DECISIONS, Scope.EVENTS_WRITE], at=T0)
    store.save(record)

    assert store.find_by_hash(hash_key(key)) == record
    assert store.find_by_hash(hash_key(key + "x")) is None
    assert authenticate(store, key) == record


def test_another_handle_sees_the_same_keys(backend: Opener) -> None:
    key = saved(backend(), "web", Scope.ADMIN)

    assert record_of(backend(), key).scopes == {Scope.ADMIN}


def test_keys_are_listed_oldest_first_revoked_ones_included(store: CredentialStore) -> None:
    saved(store, "web", at=T0 + timedelta(minutes=2))
    saved(store, "atm", at=T0 + timedelta(minutes=1))
    saved(store, "call-centre", at=T0 + timedelta(minutes=1))
    store.revoke("web", at=T0 + timedelta(hours=1))

    listed = store.list_keys()

    assert [(key.name, key.active) for key in listed] == [
        ("atm", True),
        ("call-centre", True),
        ("web", False),
    ]


def test_an_empty_store_lists_nothing_and_finds_nothing(store: CredentialStore) -> None:
    assert store.list_keys() == []
    assert store.find_by_hash("0" * 64) is None
    assert not store.revoke("web", at=T0)


def test_a_key_is_revoked_by_name_or_id_once(store: CredentialStore) -> None:
    by_name, by_id = saved(store, "kiosk"), saved(store, "branch")
    branch_id = record_of(store, by_id).key_id
    later = T0 + timedelta(days=3)

    assert store.revoke("kiosk", at=later)
    assert store.revoke(branch_id, at=later)
    assert not store.revoke("kiosk", at=later)
    assert not store.revoke(branch_id, at=later)

    for key in (by_name, by_id):
        assert record_of(store, key).revoked_at == later  # kept, as revoked
        assert authenticate(store, key) is None


def test_an_id_is_matched_before_a_name(store: CredentialStore) -> None:
    target = saved(store, "target")
    target_id = record_of(store, target).key_id
    impostor = saved(store, target_id)  # a key named like another key's id

    assert store.revoke(target_id, at=T0)
    assert not record_of(store, target).active
    assert record_of(store, impostor).active
    assert store.revoke(target_id, at=T0)  # the id is revoked now: the name matches
    assert not record_of(store, impostor).active


def test_one_active_key_per_name_and_revoked_names_can_be_reused(
    store: CredentialStore,
) -> None:
    first = saved(store, "web")
    _, clash = issue_key("web", [Scope.ADMIN], at=T0)

    with pytest.raises(DuplicateKeyName):
        store.save(clash)
    assert store.find_by_hash(clash.key_hash) is None  # nothing written

    store.revoke("web", at=T0)
    second = saved(store, "web")
    assert store.revoke("web", at=T0)  # the active one
    assert not record_of(store, first).active
    assert not record_of(store, second).active


def test_a_key_is_saved_once(store: CredentialStore) -> None:
    key = saved(store, "web")
    record = record_of(store, key)

    with pytest.raises(DuplicateKey):
        store.save(record.model_copy(update={"name": "other-name"}))
    assert [key.name for key in store.list_keys()] == ["web"]


def test_a_revoked_record_can_be_saved_as_it_is(store: CredentialStore) -> None:
    key, record = issue_key("old", [Scope.PRIVACY], at=T0)
    store.save(record.model_copy(update={"revoked_at": T0 + timedelta(days=1)}))

    assert record_of(store, key).revoked_at == T0 + timedelta(days=1)
    assert authenticate(store, key) is None
    saved(store, "old")  # the name is free: the stored key is not active


def test_concurrent_saves_of_one_name_keep_exactly_one(backend: Opener) -> None:
    stores = [backend() for _ in range(4)]
    start = threading.Barrier(len(stores))
    outcomes: list[str] = []

    def save(store: CredentialStore) -> None:
        _, record = issue_key("race", [Scope.DECISIONS], at=T0)
        start.wait(timeout=10)
        try:
            store.save(record)
            outcomes.append("saved")
        except DuplicateKeyName:
            outcomes.append("duplicate")

    threads = [threading.Thread(target=save, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(outcomes) == ["duplicate"] * 3 + ["saved"]
    assert [key.name for key in backend().list_keys()] == ["race"]


def test_a_closed_store_is_unavailable(store: CredentialStore) -> None:
    saved(store, "web")
    store.close()

    with pytest.raises(StoreUnavailable):
        store.list_keys()
    store.close()  # closing twice is harmless


# -- backend specifics --------------------------------------------------------------------------


def test_sqlite_keys_live_beside_the_online_store_in_one_file(tmp_path: Path) -> None:
    path = tmp_path / "rapport.db"
    with closing(SQLiteCredentialStore(path)) as credentials:  # created first, on purpose
        key = saved(credentials, "atm")
        with closing(SQLiteStore(CONFIG, SQLiteStoreConfig(path=path))) as online:
            online.apply_events([withdrawal("e-1")])
            assert online.read_profile("cust-1") is not None
        assert authenticate(credentials, key) is not None

    with closing(SQLiteCredentialStore(path)) as reopened:  # creating the table is idempotent
        assert [record.name for record in reopened.list_keys()] == ["atm"]
    with closing(SQLiteStore(CONFIG, SQLiteStoreConfig(path=path))) as online:
        [(version,)] = online._connection().execute("PRAGMA user_version")
        assert version == SCHEMA_VERSION  # the online store's schema version is its own


@pytest.mark.redis
def test_redis_keys_share_one_slot_under_the_store_prefix(redis_port: int) -> None:
    _flush(redis_port)
    url = f"redis://127.0.0.1:{redis_port}/0?key_prefix=tenant-a&dedup_window_seconds=60"
    with closing(open_credentials(url)) as store:
        key = saved(store, "web")
    with closing(redis.Redis(port=redis_port, decode_responses=True)) as client:
        names = sorted(client.scan_iter("*"))
        stored = [client.type(name) for name in names]
        values = [str(client.hgetall(name)) for name in names if client.type(name) == "hash"]

    assert all(name.startswith("tenant-a:auth:{api_keys}:") for name in names)
    assert len(names) == 4  # the record, its id, its name, the index
    assert sorted(stored) == ["hash", "set", "string", "string"]
    assert key not in " ".join(names + values)
    assert key.split("_", 2)[2] not in " ".join(names + values)


@pytest.mark.redis
def test_an_unreachable_redis_is_unavailable_but_opening_does_not_wait_for_it() -> None:
    store = open_credentials(f"redis://127.0.0.1:{free_port()}/0?socket_timeout_seconds=0.2")
    with closing(store), pytest.raises(StoreUnavailable, match="unavailable"):
        store.find_by_hash("0" * 64)


def test_a_redis_url_opens_a_redis_store_with_its_settings() -> None:
    with closing(open_credentials("redis://:s3cret@cache:6380?socket_timeout_seconds=0.5")) as s:
        assert isinstance(s, RedisCredentialStore)
        assert s.config.type == "redis"
        assert s.config.url == "redis://:s3cret@cache:6380/0"
        assert s.config.socket_timeout_seconds == 0.5
        assert "s3cret" not in repr(s.config)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://rapport:s3cret@db/rapport", "'postgresql'"),
        ("redis://:s3cret@localhost:notaport/0", "host"),
        ("redis://:s3cret@/0", "host"),
        ("redis+cluster://:s3cret@localhost:7000/3", "database"),
        ("redis://:s3cret@localhost:6379/0?key_prefix={bad}", "key_prefix"),
        ("var/rapport.db", "scheme"),
        ("sqlite://", "file path"),
        ("sqlite:///var/rapport.db?mode=ro", "path only"),
    ],
)
def test_an_unsupported_url_is_refused_without_echoing_secrets(url: str, message: str) -> None:
    with pytest.raises(UnsupportedStoreUrl, match=message) as refused:
        open_credentials(url)

    assert "s3cret" not in str(refused.value)


# -- issuing keys -------------------------------------------------------------------------------


def test_an_issued_key_is_random_well_formed_and_stored_only_as_its_hash() -> None:
    key, record = issue_key("atm", [Scope.DECISIONS, Scope.DECISIONS], at=T0)
    other, _ = issue_key("atm", [Scope.DECISIONS], at=T0)

    assert is_well_formed(key)
    assert key.startswith(f"rk_{record.key_id}_")
    assert key != other
    assert record.key_hash == hash_key(key)
    assert key not in record.model_dump_json()
    assert key not in repr(record)
    assert record.model_dump()["scopes"] == ["decisions"]


def test_admin_grants_every_scope_and_other_scopes_only_themselves() -> None:
    _, admin = issue_key("ops", [Scope.ADMIN], at=T0)
    _, reader = issue_key("crm", [Scope.CUSTOMERS_READ], at=T0)

    assert all(admin.grants(scope) for scope in Scope)
    assert [scope for scope in Scope if reader.grants(scope)] == [Scope.CUSTOMERS_READ]


@pytest.mark.parametrize(
    ("name", "scopes"),
    [("", [Scope.DECISIONS]), ("with space", [Scope.DECISIONS]), ("x" * 65, [Scope.ADMIN]),
     ("[red]", [Scope.ADMIN]), ("web", [])],
)  # fmt: skip
def test_a_key_needs_a_plain_name_and_a_scope(name: str, scopes: list[Scope]) -> None:
    with pytest.raises(ValidationError):
        issue_key(name, scopes, at=T0)


def test_a_key_record_needs_aware_times() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        issue_key("web", [Scope.DECISIONS], at=datetime(2026, 1, 5, 9, 30))
