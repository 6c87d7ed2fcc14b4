"""Which experiment variant a decision applies, and what applying it means.

A decision takes part in at most one experiment: the first running one (earliest start, then
id) whose population admits the customer. Experiments that must run at the same time share
the traffic through their populations' `sample_percent` (the sample hash is the experiment's
own, so two 50 % samples overlap by about a quarter: the earlier experiment takes those).
A population's segment filter looks at the customer's real value segment at each decision, so
a customer whose segment changes can enter or leave the experiment; its sample and channel
filters are fixed per customer and per decision.

Within the experiment the variant is `Experiment.assign`: a fixed hash of (salt, variant,
customer) raced by weight, so a customer gets the same variant at the ATM, on the web and in
the call centre, and changing weights moves customers only into variants that grew and out of
variants that shrank, no more than the new shares require (`experiments.hashing`).

A variant's policy (`variant_policy`) is the serving policy with the variant's exploration
rate and catalogue subset, everything else (contact policy, objective) as the serving policy
has it; its scorer is the model behind its `model_alias`.

"Personalisation off" (a holdout control, `personalisation: false`) means the decision sees
the customer as the engine sees a customer it has learned nothing about (`depersonalised`),
while everything the customer stated or is owed still holds:

- off: personalised defaults (no habit is pre-filled); the learned contact channel (the
  stated one, else the population's); the segments (a holdout customer is `mass`, with no
  needs segments, so eligibility on learned facts is false); the trained model (actions are
  scored by the online population rates: `model_alias` is ignored);
- kept: consents, stated preferences, service before sales (open complaints, incidents, low
  feedback), caps, cooldowns and the suppression of declined actions, and the variant's
  catalogue subset and exploration.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from api.serving import ANONYMOUS_CUSTOMER, Treatment
from engine.decision import DecisionRequest, ExperimentExposure
from engine.facts import value_segment
from engine.next_best_action import DecisionPolicy
from engine.profile import Profile
from engine.scoring import Scorer
from experiments.definitions import Experiment, Variant

#: The served model behind a registry alias ("champion", "challenger"...), or None if none is.
ScorerLookup = Callable[[str], Scorer | None]

#: What the profile learns; a holdout decision sees none of it.
_LEARNED_STATE = (
    "channel_usage",
    "contact_channels",
    "request_channels",
    "habits",
    "default_feedback",
)


def depersonalised(profile: Profile | None) -> Profile | None:
    """The profile without what was learned about the customer (see the module docstring):
    habits and the feedback on defaults, channel use and learned contact channels. Consents,
    stated preferences, cases, feedback scores, deliveries and action feedback stay."""
    if profile is None:
        return None
    return profile.model_copy(update={name: {} for name in _LEARNED_STATE})


@dataclass(frozen=True)
class VariantPolicy:
    """What a variant applies: the decision policy (None when the serving path has none),
    whether decisions are personalised, and the model alias (None: the online rates)."""

    policy: DecisionPolicy | None
    personalised: bool
    model_alias: str | None


def variant_policy(base: DecisionPolicy | None, variant: Variant) -> VariantPolicy:
    """The serving policy `base` as `variant` configures it (pure).

    `exploration_epsilon` replaces the exploration by epsilon-greedy at that rate (0: off);
    `actions` keeps only those catalogue actions (ids the catalogue lacks are ignored: the
    catalogue may have changed since the experiment was created).
    """
    model_alias = variant.model_alias if variant.personalisation else None
    if base is None:
        return VariantPolicy(None, variant.personalisation, model_alias)
    # Only what the variant sets changes: every other field (the contact policy, the
    # objective, any field added later) stays as the deployment runs it.
    changes: dict[str, object] = {}
    if variant.actions is not None:
        kept = set(variant.actions)
        # Not re-validated: a subset of a valid catalogue is valid (an empty one offers nothing).
        changes["catalogue"] = base.catalogue.model_copy(
            update={"actions": [a for a in base.catalogue.actions if a.id in kept]}
        )
    if variant.exploration_epsilon is not None:
        epsilon = variant.exploration_epsilon
        changes["exploration"] = base.exploration.model_copy(
            update={"strategy": "epsilon_greedy" if epsilon > 0 else "off", "epsilon": epsilon}
        )
    if not changes:
        return VariantPolicy(base, variant.personalisation, model_alias)
    # Built anew from the base's fields, not by `model_copy`: a copy would carry the base's
    # cached `limited` and `purposes` over to a different catalogue.
    fields = {name: getattr(base, name) for name in type(base).model_fields}
    policy = type(base).model_validate(fields | changes)
    return VariantPolicy(policy, variant.personalisation, model_alias)


class ExperimentAssigner:
    """The `api.serving.Assigner` of the running experiments: call it with the
    customer's profile and the request; None when the customer takes part in none.

    `experiments` are those running at the decision's time, in priority order
    (`experiments.registry.running_experiments`); `policy` is the serving policy; `scorers`
    finds the model of an alias (None: no model server, every variant on the online rates).
    """

    def __init__(
        self,
        experiments: Sequence[Experiment],
        *,
        policy: DecisionPolicy | None,
        scorers: ScorerLookup | None = None,
    ) -> None:
        self.experiments = experiments
        self.policy = policy
        self.scorers = scorers

    def __call__(self, profile: Profile | None, request: DecisionRequest) -> Treatment | None:
        customer_id = request.customer_id
        if not self.experiments or customer_id == ANONYMOUS_CUSTOMER:
            return None  # anonymous decisions share one id: they cannot be randomised
        segment = value_segment(profile).value if profile else "mass"
        for experiment in self.experiments:
            if experiment.population.admits(
                experiment.assignment_salt,
                customer_id,
                segment=segment,
                channel=request.channel.value,
            ):
                return self._treatment(experiment, profile, customer_id)
        return None

    def _treatment(
        self, experiment: Experiment, profile: Profile | None, customer_id: str
    ) -> Treatment:
        name = experiment.assign(customer_id)
        applied = variant_policy(self.policy, experiment.variant(name))
        scorer = None
        if applied.model_alias is not None and self.scorers is not None:
            scorer = self.scorers(applied.model_alias)
        return Treatment(
            profile=profile if applied.personalised else depersonalised(profile),
            policy=applied.policy,
            scorer=scorer,
            exposures=[ExperimentExposure(experiment_id=experiment.id, variant=name)],
        )


@dataclass(frozen=True)
class ExperimentRouter:
    """What the decision route needs to find a decision's assigner: the running experiments
    at a time (e.g. `experiments.registry.RunningExperiments.at`), the serving policy and the
    model of an alias (None: no model server)."""

    running: Callable[[datetime], Sequence[Experiment]]
    policy: DecisionPolicy | None
    scorers: ScorerLookup | None = None

    def assigner(self, at: datetime) -> ExperimentAssigner | None:
        """The assigner of a decision asked at `at`; None when no experiment runs then."""
        experiments = self.running(at)
        if not experiments:
            return None
        return ExperimentAssigner(experiments, policy=self.policy, scorers=self.scorers)
