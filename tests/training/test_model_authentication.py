"""Model bundles are authenticated by the registry's record, not by their own manifest: a
forged model with a rewritten manifest is refused, and with a signing key even a version
registered by someone without the key is. A real MLflow SQLite store in a temp folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from api.model_server import ModelServer, RegistrySource
from tests.training.test_registry import empty_mlflow_store, simulated_examples
from training.bundle import MANIFEST
from training.registry import (
    BUNDLE_DIGEST_TAG,
    CHAMPION,
    BundleNotAuthenticated,
    ModelRegistry,
    PromotionRule,
    folder_checksum,
)
from training.tracking import TrackingTarget, log_training
from training.train import TrainConfig, TrainResult, train

MODEL = "rapport-nba"
KEY = b"the trainer's signing key"
RULE = PromotionRule("holdout.log_loss", higher_is_better=False)


@pytest.fixture(scope="module")
def trained() -> TrainResult:
    return train(
        simulated_examples(), config=TrainConfig(seed=0, threads=1, learning_curve_points=0)
    )


@pytest.fixture
def lab(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, TrackingTarget]:
    uri = empty_mlflow_store(tmp_path / "mlflow", tmp_path_factory.getbasetemp())
    return uri, TrackingTarget(uri, "rapport", str(tmp_path / "mlflow" / "artifacts"))


def register(
    registry: ModelRegistry, result: TrainResult, target: TrackingTarget
) -> tuple[str, Path]:
    """Log and register `result`; the version and the folder its bundle is stored in."""
    run = log_training(result, target, source="simulated logs")
    version = registry.register(run.model_uri, run_id=run.run_id).version
    location = registry.client.get_model_version_download_uri(MODEL, version)
    [manifest] = Path(location.removeprefix("file://")).rglob(MANIFEST)
    return version, manifest.parent


def forge(bundle: Path) -> None:
    """Change the model's description and rewrite its checksum in the manifest, as an attacker
    with write access to the artifact store would: the manifest alone then vouches for it."""
    model = bundle / "model.json"
    description = json.loads(model.read_text())
    description["forged"] = True
    model.write_text(json.dumps(description))
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["files"]["model.json"] = hashlib.sha256(model.read_bytes()).hexdigest()
    (bundle / MANIFEST).write_text(json.dumps(manifest))


def test_registration_records_the_digest_of_the_bundle_files(
    lab: tuple[str, TrackingTarget], trained: TrainResult
) -> None:
    uri, target = lab
    registry = ModelRegistry(uri, MODEL)
    version, bundle = register(registry, trained, target)

    recorded = registry.version(version).tags[BUNDLE_DIGEST_TAG]
    assert recorded == f"sha256:{folder_checksum(bundle)}"
    assert registry.load_version(version).checksum == folder_checksum(bundle)


def test_a_forged_model_with_a_rewritten_manifest_is_refused(
    lab: tuple[str, TrackingTarget], trained: TrainResult
) -> None:
    uri, target = lab
    registry = ModelRegistry(uri, MODEL)
    version, bundle = register(registry, trained, target)
    forge(bundle)

    with pytest.raises(BundleNotAuthenticated, match="checksum mismatch"):
        registry.load_version(version)


def test_signed_digests_are_verified_with_the_key_only(
    lab: tuple[str, TrackingTarget], trained: TrainResult
) -> None:
    uri, target = lab
    signed = ModelRegistry(uri, MODEL, signing_key=KEY)
    version, _ = register(signed, trained, target)

    assert signed.version(version).tags[BUNDLE_DIGEST_TAG].startswith("hmac-sha256:")
    assert signed.load_version(version).bundle is not None
    with pytest.raises(BundleNotAuthenticated, match="checksum mismatch"):
        ModelRegistry(uri, MODEL, signing_key=b"another key").load_version(version)
    with pytest.raises(BundleNotAuthenticated, match="RAPPORT_MODEL_SIGNING_KEY"):
        ModelRegistry(uri, MODEL).load_version(version)


def test_a_version_registered_without_the_key_is_refused_where_one_is_required(
    lab: tuple[str, TrackingTarget], trained: TrainResult
) -> None:
    uri, target = lab
    version, _ = register(ModelRegistry(uri, MODEL), trained, target)  # no key: plain sha256

    with pytest.raises(BundleNotAuthenticated, match="without a signature"):
        ModelRegistry(uri, MODEL, signing_key=KEY).load_version(version)


def test_a_version_without_a_recorded_digest_is_refused(
    lab: tuple[str, TrackingTarget], trained: TrainResult
) -> None:
    uri, target = lab
    registry = ModelRegistry(uri, MODEL)
    version, _ = register(registry, trained, target)
    registry.client.delete_model_version_tag(MODEL, version, BUNDLE_DIGEST_TAG)

    with pytest.raises(BundleNotAuthenticated, match="no recorded bundle digest"):
        registry.load_version(version)


def test_a_forged_champion_is_refused_and_the_old_model_keeps_serving(
    lab: tuple[str, TrackingTarget], trained: TrainResult
) -> None:
    uri, target = lab
    registry = ModelRegistry(uri, MODEL, signing_key=KEY)
    first, _ = register(registry, trained, target)
    registry.promote(RULE, None)
    server = ModelServer(RegistrySource(uri, MODEL, signing_key=KEY))
    [serving] = server.refresh()
    assert serving.model is not None
    assert serving.model.version == first

    second, bundle = register(registry, trained, target)
    forge(bundle)
    registry.client.set_registered_model_alias(MODEL, CHAMPION, second)
    [refused] = server.refresh()

    assert refused.model is not None
    assert refused.model.version == first
    assert refused.registry_version == second
    assert refused.error is not None
    assert "BundleNotAuthenticated" in refused.error
    assert server.scorer() is serving.model.scorer
