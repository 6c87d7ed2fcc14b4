"""The MLflow model registry of Rapport: versions of one registered model, the aliases
`champion` (what the API serves) and `challenger` (the latest training), promotion and
rollback.

Promotion history is kept on the versions themselves: a promoted version carries the tag
`previous_champion` (the version it replaced), so `rollback` walks back one promotion at a time,
and the challenger's training run records why it was promoted or refused (`promotion.*` tags
and metrics).

Bundles are authenticated by the registry, not by themselves: at registration the digest of the
version's bundle files (`folder_checksum`) is recorded on the version as the tag
`rapport.bundle_digest`, and `load_version` refuses a bundle whose files do not give that
digest. A bundle's own `manifest.json` only vouches for itself (whoever edits a file can rewrite
its checksum there), so it catches corruption, not forgery. With a signing key
(RAPPORT_MODEL_SIGNING_KEY, required in production) the recorded digest is an HMAC-SHA256 of the
checksum that only holders of the key (the trainer and the API) can produce, so even someone who
can write to the registry cannot make the API serve a model of their own.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from mlflow.entities.model_registry import ModelVersion
from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR
from mlflow.exceptions import MlflowException

from training.bundle import ModelBundle

CHAMPION = "champion"
CHALLENGER = "challenger"
#: Where the bundle lies inside a registered version's artifacts (see training.tracking).
BUNDLE_PATH = "artifacts/bundle"
PREVIOUS_CHAMPION = "previous_champion"
#: The version tag holding the bundle's digest: "sha256:<hex>" or "hmac-sha256:<hex>".
BUNDLE_DIGEST_TAG = "rapport.bundle_digest"


class RegistryError(Exception):
    """The registry could not answer (unreachable, or refused the request)."""


class NoSuchVersion(RegistryError):
    """No version with this number, or no version behind this alias."""


class BundleNotAuthenticated(RegistryError):
    """A version's bundle does not match the digest the registry recorded at registration (or
    has none, or was recorded without the signature this deployment requires)."""


class NoComparison(RegistryError):
    """A champion exists and the challenger was not compared with it."""


class NothingToRollBack(RegistryError):
    """The champion replaced no earlier version (or there is no champion)."""


@dataclass(frozen=True)
class RegisteredVersion:
    """One version of the registered model, as the registry describes it."""

    name: str
    version: str
    run_id: str | None
    source: str
    aliases: tuple[str, ...]
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class LoadedVersion:
    """A version's bundle, loaded and verified against its manifest."""

    version: RegisteredVersion
    bundle: ModelBundle
    checksum: str  # SHA-256 over the bundle's files (relative path and content), hex

    @property
    def run_id(self) -> str | None:
        return self.version.run_id

    @property
    def source(self) -> str:
        return self.version.source


@dataclass(frozen=True)
class PromotionRule:
    """A challenger is promoted if it beats the champion on `metric` by more than
    `min_improvement` (in the metric's units), on the same holdout."""

    metric: str
    higher_is_better: bool
    min_improvement: float = 0.0

    def judge(self, challenger: float, champion: float | None) -> tuple[bool, str]:
        """(promote?, why) for these two values of the metric."""
        if champion is None:
            return True, "no champion to beat"
        gain = challenger - champion if self.higher_is_better else champion - challenger
        word = "higher" if self.higher_is_better else "lower"
        comparison = (
            f"{self.metric}: challenger {challenger:.6g}, champion {champion:.6g} "
            f"({word} is better, needs a margin > {self.min_improvement:g})"
        )
        if gain > self.min_improvement:
            return True, f"beats the champion: {comparison}"
        return False, f"does not beat the champion: {comparison}"


@dataclass(frozen=True)
class Comparison:
    """Both models' value of the rule's metric on one holdout, described by `holdout`."""

    challenger: float
    champion: float | None
    holdout: str


@dataclass(frozen=True)
class Promotion:
    """What `promote` did."""

    promoted: bool
    forced: bool
    challenger: str
    previous_champion: str | None
    reason: str


class ModelRegistry:
    """One registered model in an MLflow registry (`uri`: sqlite:///..., https://...).

    Every method raises RegistryError (or a subclass) when the registry cannot answer.
    """

    def __init__(self, uri: str, name: str, *, signing_key: bytes | None = None) -> None:
        """`signing_key`: the HMAC key bundle digests are recorded and verified with; None
        records and accepts plain SHA-256 digests (development)."""
        self.uri = uri
        self.name = name
        self._signing_key = signing_key or None
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        # MLflow's download progress bars would interleave with the API's JSON logs and the
        # CLI's own progress bars.
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.set(False)  # type: ignore[no-untyped-call]

    # ---- reading ----

    def alias_versions(self) -> dict[str, str]:
        """Every alias of the model and its version; {} if the model is not registered."""
        with _registry_errors():
            try:
                model = self.client.get_registered_model(self.name)
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return {}
                raise
        return {alias: str(version) for alias, version in model.aliases.items()}

    def version(self, version: str) -> RegisteredVersion:
        """Raises NoSuchVersion."""
        with _registry_errors():
            try:
                found = self.client.get_model_version(self.name, version)
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    raise NoSuchVersion(f"{self.name} has no version {version}") from None
                raise
        return _described(found)

    def version_for(self, alias: str) -> RegisteredVersion | None:
        """The version behind `alias`, or None."""
        version = self.alias_versions().get(alias)
        return None if version is None else self.version(version)

    def run_record(self, run_id: str) -> tuple[dict[str, float], dict[str, str]]:
        """The metrics (latest values) and tags of a run."""
        with _registry_errors():
            run = self.client.get_run(run_id)
        return dict(run.data.metrics), dict(run.data.tags)

    # ---- writing ----

    def register(
        self, model_uri: str, *, run_id: str, alias: str | None = CHALLENGER
    ) -> RegisteredVersion:
        """A new version of the model from a logged model (`models:/m-...`), behind `alias`."""
        with _registry_errors():
            if not self._model_exists():
                self.client.create_registered_model(
                    self.name, description="Rapport's acceptance model (next-best-action)."
                )
            created = self.client.create_model_version(self.name, model_uri, run_id=run_id)
            version = str(created.version)
            with tempfile.TemporaryDirectory(prefix="rapport-model-") as scratch:
                checksum = folder_checksum(self.download_bundle(version, Path(scratch)))
            self.client.set_model_version_tag(
                self.name, version, BUNDLE_DIGEST_TAG, self._digest(checksum)
            )
            if alias is not None:
                self.client.set_registered_model_alias(self.name, alias, created.version)
        return self.version(str(created.version))

    def promote(
        self, rule: PromotionRule, comparison: Comparison | None, *, force: bool = False
    ) -> Promotion:
        """Move `champion` to the challenger if it beats the champion by `rule` (`comparison`:
        both measured on one holdout), or whatever the comparison says if `force`. The decision
        and its reason are recorded on the challenger's run and version either way.

        Without a champion, the challenger is promoted uncompared. Raises NoSuchVersion when
        there is no challenger, NoComparison when `comparison` is None without `force` while
        a champion exists.
        """
        aliases = self.alias_versions()
        challenger = aliases.get(CHALLENGER)
        if challenger is None:
            raise NoSuchVersion(f"{self.name} has no {CHALLENGER}: train one first")
        champion = aliases.get(CHAMPION)
        if challenger == champion:
            return Promotion(False, False, challenger, champion, "the challenger is the champion")
        if comparison is not None:
            wins, reason = rule.judge(comparison.challenger, comparison.champion)
            reason = f"{reason} on {comparison.holdout}"
        elif champion is None:
            wins, reason = True, "no champion to beat"
        elif force:
            wins, reason = False, "not compared"
        else:
            raise NoComparison(
                f"version {challenger} was not compared with the champion (version {champion})"
            )
        promoted = wins or force
        if force and not wins:
            reason = f"forced: {reason}"
        self._record(challenger, champion, rule, comparison, promoted, force, reason)
        if promoted:
            self._move_champion(challenger, previous=champion, reason=reason)
        return Promotion(promoted, force and not wins, challenger, champion, reason)

    def rollback(self, *, reason: str = "rollback") -> tuple[str, str]:
        """Point `champion` back at the version the current champion replaced; returns (from,
        to). The rolled-back version keeps its tags (`rolled_back_at`), so history stays."""
        current = self.version_for(CHAMPION)
        if current is None:
            raise NothingToRollBack(f"{self.name} has no {CHAMPION}")
        previous = current.tags.get(PREVIOUS_CHAMPION)
        if not previous:
            raise NothingToRollBack(
                f"{self.name} version {current.version} replaced no earlier {CHAMPION}"
            )
        self.version(previous)  # still registered?
        now = _now()
        with _registry_errors():
            self.client.set_registered_model_alias(self.name, CHAMPION, previous)
            for key, value in {
                "rolled_back_at": now,
                "rolled_back_to": previous,
                "rolled_back_reason": reason,
            }.items():
                self.client.set_model_version_tag(self.name, current.version, key, value)
            self._log_history(
                {"at": now, "event": "rollback", "from": current.version, "to": previous}
            )
        return current.version, previous

    # ---- loading ----

    def download_bundle(self, version: str, directory: Path) -> Path:
        """Download the bundle of `version` into `directory`; returns the bundle's folder."""
        with _registry_errors():
            location = self.client.get_model_version_download_uri(self.name, version)
            path = download_artifacts(
                artifact_uri=f"{location.rstrip('/')}/{BUNDLE_PATH}",
                dst_path=str(directory),
                tracking_uri=self.uri,
            )
        return Path(path)

    def load_version(self, version: str) -> LoadedVersion:
        """Download `version`, check its files against the digest the registry recorded at
        registration (raises BundleNotAuthenticated), then load its bundle, checking the
        manifest (raises training.bundle.BundleInvalid). The bundle is read into memory; the
        downloaded files are removed."""
        described = self.version(version)
        with tempfile.TemporaryDirectory(prefix="rapport-model-") as scratch:
            folder = self.download_bundle(version, Path(scratch))
            checksum = folder_checksum(folder)
            self._authenticate(version, described.tags.get(BUNDLE_DIGEST_TAG), checksum)
            bundle = ModelBundle.load(folder, version=f"{self.name}/{version}")
        return LoadedVersion(described, bundle, checksum)

    def _digest(self, checksum: str) -> str:
        """What the registry records for a bundle of `checksum`."""
        if self._signing_key is None:
            return f"sha256:{checksum}"
        signature = hmac.new(self._signing_key, checksum.encode(), hashlib.sha256).hexdigest()
        return f"hmac-sha256:{signature}"

    def _authenticate(self, version: str, recorded: str | None, checksum: str) -> None:
        if recorded is None:
            raise BundleNotAuthenticated(
                f"version {version} has no recorded bundle digest ({BUNDLE_DIGEST_TAG}): "
                "register it again (rapport train)"
            )
        signed = recorded.startswith("hmac-sha256:")
        if self._signing_key is not None and not signed:
            raise BundleNotAuthenticated(
                f"version {version} was registered without a signature, and this deployment "
                "requires one (RAPPORT_MODEL_SIGNING_KEY)"
            )
        if self._signing_key is None and signed:
            raise BundleNotAuthenticated(
                f"version {version} is signed; set RAPPORT_MODEL_SIGNING_KEY to verify it"
            )
        if not hmac.compare_digest(recorded, self._digest(checksum)):
            raise BundleNotAuthenticated(
                f"version {version}: checksum mismatch: the bundle's files do not match the "
                "digest recorded at registration (changed since)"
            )

    # ---- internals ----

    def _model_exists(self) -> bool:
        try:
            self.client.get_registered_model(self.name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise
        return True

    def _move_champion(self, version: str, *, previous: str | None, reason: str) -> None:
        now = _now()
        with _registry_errors():
            # "" when there was none: a version promoted again after a rollback forgets the
            # champion it replaced the first time.
            tags = {
                "promoted_at": now,
                "promotion_reason": reason,
                PREVIOUS_CHAMPION: previous or "",
            }
            for key, value in tags.items():
                self.client.set_model_version_tag(self.name, version, key, value)
            self.client.set_registered_model_alias(self.name, CHAMPION, version)
            # The challenger is the champion now; the next training names the next one.
            self.client.delete_registered_model_alias(self.name, CHALLENGER)
            self._log_history({"at": now, "event": "promote", "from": previous, "to": version})

    def _record(
        self,
        challenger: str,
        champion: str | None,
        rule: PromotionRule,
        comparison: Comparison | None,
        promoted: bool,
        force: bool,
        reason: str,
    ) -> None:
        """Why the challenger was promoted or refused, on its run and on its version."""
        decision = "promoted" if promoted else "refused"
        tags = {
            "promotion.decision": decision,
            "promotion.forced": str(force).lower(),
            "promotion.reason": reason,
            "promotion.metric": rule.metric,
            "promotion.champion_version": champion or "",
            "promotion.at": _now(),
        }
        if comparison is not None:
            tags["promotion.holdout"] = comparison.holdout
        metrics = {}
        if comparison is not None:
            metrics[f"promotion.challenger.{rule.metric}"] = comparison.challenger
            if comparison.champion is not None:
                metrics[f"promotion.champion.{rule.metric}"] = comparison.champion
        run_id = self.version(challenger).run_id
        with _registry_errors():
            if run_id:
                for key, value in tags.items():
                    self.client.set_tag(run_id, key, value)
                for key, number in metrics.items():
                    self.client.log_metric(run_id, key, number)
            self.client.set_model_version_tag(self.name, challenger, "promotion", decision)
            self.client.set_model_version_tag(self.name, challenger, "promotion_reason", reason)

    def _log_history(self, entry: Mapping[str, str | None]) -> None:
        """Append to the registered model's `champion_history` tag (the latest 20 moves)."""
        model = self.client.get_registered_model(self.name)
        history = json.loads(model.tags.get("champion_history", "[]"))
        history = [*history, dict(entry)][-20:]
        self.client.set_registered_model_tag(self.name, "champion_history", json.dumps(history))


def folder_checksum(folder: Path) -> str:
    """SHA-256 over every file of `folder`: its relative path and its content's SHA-256."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _described(version: ModelVersion) -> RegisteredVersion:
    return RegisteredVersion(
        name=version.name,
        version=str(version.version),
        run_id=version.run_id or None,
        source=version.source or "",
        aliases=tuple(version.aliases),
        tags=dict(version.tags),
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextmanager
def _registry_errors() -> Iterator[None]:
    """Turns MLflow and network errors into RegistryError."""
    try:
        yield
    except RegistryError:
        raise
    except (MlflowException, OSError) as exc:
        raise RegistryError(f"MLflow registry: {type(exc).__name__}: {exc}") from exc
