"""How the synthetic customers answer offers, and what they consent to.

`draw_latent_extras` adds to a customer's truth what next-best-action needs: latent traits
(value tier, channel style, travel), products held, trips abroad, consent changes, and the
probability of accepting each action of the retail-bank catalogue when it is offered. It draws
from a generator of its own, after the rest of the truth, so that adding it left the events
drawn before unchanged.

An action's acceptance probability is logistic: logit(base) plus the effects of the customer's
traits, their responsiveness to any offer and their own taste for this action (noise). The
engine sees the traits only in part: the value tier through withdrawal amounts (branch
withdrawals blur it), channel style through channel use, travel through foreign currency
orders (before some trips only). So learning acceptance by segment helps, and an oracle that
knows each customer's affinities does better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from engine.events import Channel
from engine.preferences import ConsentStatus, Purpose
from training.simulation.truth import (
    CASH_WITHDRAWAL,
    Calendar,
    ConsentChange,
    CustomerTruth,
    LatentTraits,
    PopulationSpec,
)

TIERS: tuple[str, str, str] = ("mass", "affluent", "premium")
#: Usual ATM withdrawal (EUR) from which a customer tends to be affluent, and premium.
_TIER_WITHDRAWALS = (150.0, 300.0)
#: Sigma of log wealth around the log of the usual withdrawal: the tier is not the amount.
_WEALTH_SPREAD = 0.35
#: Chance of holding each product, by tier (mass, affluent, premium).
_PRODUCT_SHARES: dict[str, tuple[float, float, float]] = {
    "debit_card": (0.9, 0.9, 0.85),
    "credit_card": (0.25, 0.5, 0.7),
    "savings_account": (0.2, 0.35, 0.45),
    "investment_account": (0.02, 0.1, 0.3),
    "mortgage": (0.15, 0.3, 0.35),
    "personal_loan": (0.12, 0.08, 0.05),
    "home_insurance": (0.15, 0.25, 0.35),
}
#: Of credit card holders, those who already have the premium card, by tier.
_PREMIUM_CARD_SHARES = (0.0, 0.1, 0.3)
_TRAVEL_INSURANCE_SHARE = 0.15
#: Channels a customer may consent to marketing on, one by one.
_MARKETING_CHANNELS = (Channel.EMAIL, Channel.SMS, Channel.MOBILE_APP)
#: Marketing consent is mostly given at onboarding or in the app's settings, early on.
_CONSENT_DAYS = 60
_MEAN_SATISFACTION = 7.8
MARKETING, PROFILING = Purpose.MARKETING, Purpose.PROFILING
GRANTED, REVOKED = ConsentStatus.GRANTED, ConsentStatus.REVOKED


@dataclass(frozen=True, slots=True)
class Appeal:
    """How an action appeals: `base` acceptance for a mass-tier customer with no particular
    trait, and logit effects of the tiers, of the digital and assisted shares of touches (per
    unit of share), of travelling, and of each point of satisfaction above the mean."""

    base: float
    affluent: float = 0.0
    premium: float = 0.0
    digital: float = 0.0
    assisted: float = 0.0
    traveller: float = 0.0
    satisfaction: float = 0.0

    def logit(self, traits: LatentTraits, satisfaction: float) -> float:
        tier = {"affluent": self.affluent, "premium": self.premium}.get(traits.value_tier, 0.0)
        return (
            math.log(self.base / (1 - self.base))
            + tier
            + self.digital * traits.digital
            + self.assisted * traits.assisted
            + self.traveller * traits.traveller
            + self.satisfaction * (satisfaction - _MEAN_SATISFACTION)
            + traits.responsiveness
        )


#: The actions of engine/catalogues/retail_bank.yaml. Help with an open problem and the usual
#: withdrawal are welcome; information is taken up now and then; sales rarely, unless they fit.
APPEAL: dict[str, Appeal] = {
    "resolve_complaint": Appeal(0.55, assisted=1.0),
    "callback_offer": Appeal(0.35, digital=-0.6, assisted=1.5),
    "failed_payment_help": Appeal(0.5, digital=0.6),
    "outage_update": Appeal(0.45, digital=0.6),
    "feedback_follow_up": Appeal(0.25, assisted=1.0),
    "usual_withdrawal": Appeal(0.7),
    "branch_appointment": Appeal(0.1, premium=0.4, digital=-1.2, assisted=3.0),
    "paperless_statements": Appeal(0.08, digital=1.6, assisted=-1.5),
    "mobile_app_onboarding": Appeal(0.06, digital=1.0, assisted=-1.5),
    "low_balance_alert_setup": Appeal(0.15, affluent=-0.5, premium=-1.2, digital=0.8),
    "contact_preferences_review": Appeal(0.12, assisted=0.8),
    "savings_plan": Appeal(0.05, affluent=0.8, premium=1.4, satisfaction=0.25),
    "credit_card_upgrade": Appeal(0.04, affluent=0.5, premium=1.2, traveller=0.9),
    "travel_insurance": Appeal(0.03, affluent=0.3, premium=0.5, traveller=2.2),
    "mortgage_renegotiation": Appeal(0.12, affluent=0.2, premium=0.4, satisfaction=0.15),
    "dormant_reactivation": Appeal(0.05, digital=0.8),
}
#: Actions added to the catalogue later: each shares the taste (the noise draw) of an action of
#: `APPEAL`, so adding them drew nothing more and left every population as it was.
SHARED_TASTE: dict[str, tuple[str, Appeal]] = {
    "usual_payment_due": ("usual_withdrawal", Appeal(0.65, digital=0.3)),
}


def draw_latent_extras(
    rng: np.random.Generator, spec: PopulationSpec, calendar: Calendar, truth: CustomerTruth
) -> CustomerTruth:
    """`truth` with latent traits, products, trips, consents and action affinities."""
    traits = _draw_traits(rng, spec, truth)
    tier = TIERS.index(traits.value_tier)
    return truth.model_copy(
        update={
            "traits": traits,
            "products": _draw_products(rng, tier, traits.traveller),
            "trips": _draw_trips(rng, spec, calendar, traits.traveller),
            "consents": _draw_consents(rng, spec, calendar),
            "action_affinity": _draw_affinities(rng, spec, traits, truth.satisfaction),
        }
    )


def _draw_traits(
    rng: np.random.Generator, spec: PopulationSpec, truth: CustomerTruth
) -> LatentTraits:
    usual = next(h for h in truth.habits if h.request == CASH_WITHDRAWAL)
    wealth = math.log(float(usual.values["amount"])) + float(rng.normal(0.0, _WEALTH_SPREAD))
    tier = sum(wealth >= math.log(threshold) for threshold in _TIER_WITHDRAWALS)
    digital, assisted = _channel_style(truth)
    return LatentTraits(
        value_tier=TIERS[tier],
        digital=digital,
        assisted=assisted,
        traveller=bool(rng.random() < spec.traveller_share[tier]),
        responsiveness=float(rng.normal(0.0, spec.responsiveness_spread)),
    )


def _channel_style(truth: CustomerTruth) -> tuple[float, float]:
    """Expected shares of the customer's touches on web and app, and in branch and by phone."""
    uses: dict[Channel, float] = {}
    for request, per_month in truth.requests_per_month.items():
        for channel, share in truth.request_channels[request].items():
            uses[channel] = uses.get(channel, 0.0) + per_month * share
    for channel, share in truth.contact_channels.items():
        uses[channel] = uses.get(channel, 0.0) + truth.contacts_per_month * share
    total = sum(uses.values()) or 1.0
    digital = (uses.get(Channel.WEB, 0.0) + uses.get(Channel.MOBILE_APP, 0.0)) / total
    assisted = (uses.get(Channel.BRANCH, 0.0) + uses.get(Channel.CALL_CENTER, 0.0)) / total
    return min(digital, 1.0), min(assisted, 1.0)


def _draw_products(rng: np.random.Generator, tier: int, traveller: bool) -> tuple[str, ...]:
    held = {"current_account"}
    for product, shares in _PRODUCT_SHARES.items():
        if rng.random() < shares[tier]:
            held.add(product)
    if "credit_card" in held and rng.random() < _PREMIUM_CARD_SHARES[tier]:
        held.add("premium_credit_card")
    if traveller and rng.random() < _TRAVEL_INSURANCE_SHARE:
        held.add("travel_insurance")
    return tuple(sorted(held))


def _draw_trips(
    rng: np.random.Generator, spec: PopulationSpec, calendar: Calendar, traveller: bool
) -> list[datetime]:
    if not traveller:
        return []
    count = int(rng.poisson(spec.trips_per_year * calendar.days / 365.0))
    return sorted(calendar.moments(rng, Channel.WEB, count))


def _draw_consents(
    rng: np.random.Generator, spec: PopulationSpec, calendar: Calendar
) -> list[ConsentChange]:
    """Marketing granted on every channel or on one or two, maybe revoked later; profiling
    revoked by a few, and granted again by some of them."""
    changes = [*_marketing_consents(rng, spec, calendar), *_profiling_consents(rng, spec, calendar)]
    return sorted(changes, key=lambda change: change.at)


def _marketing_consents(
    rng: np.random.Generator, spec: PopulationSpec, calendar: Calendar
) -> list[ConsentChange]:
    draw = rng.random()
    if draw < spec.marketing_consent_share:
        scope: list[Channel | None] = [None]
    elif draw < spec.marketing_consent_share + spec.channel_marketing_consent_share:
        count = 1 + int(rng.random() < 0.4)
        picked = rng.choice(len(_MARKETING_CHANNELS), size=count, replace=False)
        scope = [_MARKETING_CHANNELS[int(index)] for index in sorted(picked)]
    else:
        return []
    early = (0, min(_CONSENT_DAYS, calendar.days))
    granted_at = calendar.moments(rng, Channel.WEB, 1, days=early)[0]
    changes = [
        ConsentChange(at=granted_at, purpose=MARKETING, channel=channel, status=GRANTED)
        for channel in scope
    ]
    if rng.random() < spec.marketing_revocation_share:
        revoked = scope[int(rng.integers(len(scope)))]
        later = _later_moment(rng, calendar, granted_at)
        if later is not None:
            changes.append(
                ConsentChange(at=later, purpose=MARKETING, channel=revoked, status=REVOKED)
            )
    return changes


def _profiling_consents(
    rng: np.random.Generator, spec: PopulationSpec, calendar: Calendar
) -> list[ConsentChange]:
    if rng.random() >= spec.profiling_revocation_share:
        return []
    revoked_at = calendar.moments(rng, Channel.WEB, 1)[0]
    changes = [ConsentChange(at=revoked_at, purpose=PROFILING, status=REVOKED)]
    if rng.random() < spec.profiling_regrant_share:
        later = _later_moment(rng, calendar, revoked_at)
        if later is not None:
            changes.append(ConsentChange(at=later, purpose=PROFILING, status=GRANTED))
    return changes


def _later_moment(rng: np.random.Generator, calendar: Calendar, after: datetime) -> datetime | None:
    """A moment on a later day of the period, or None if `after` is on its last day."""
    first = calendar.day_of(after) + 1
    if first >= calendar.days:
        return None
    return calendar.moments(rng, Channel.WEB, 1, days=(first, calendar.days))[0]


def _draw_affinities(
    rng: np.random.Generator, spec: PopulationSpec, traits: LatentTraits, satisfaction: float
) -> dict[str, float]:
    noise = rng.normal(0.0, spec.affinity_noise, size=len(APPEAL))
    tastes = dict(zip(sorted(APPEAL), (float(taste) for taste in noise), strict=True))
    affinities = {
        action_id: _logistic(appeal.logit(traits, satisfaction) + tastes[action_id])
        for action_id, appeal in sorted(APPEAL.items())
    }
    for action_id, (shared, appeal) in SHARED_TASTE.items():
        affinities[action_id] = _logistic(appeal.logit(traits, satisfaction) + tastes[shared])
    return affinities


def _logistic(logit: float) -> float:
    return 1.0 / (1.0 + math.exp(-logit))
