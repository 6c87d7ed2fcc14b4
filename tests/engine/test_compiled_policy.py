"""The policy compiled once answers as its catalogue and contact policy say, and a copy with
another catalogue or contact policy compiles its own."""

from __future__ import annotations

from engine.catalogue import RETAIL_BANK_CATALOGUE, load_catalogue
from engine.next_best_action import DecisionPolicy
from engine.policy import ContactPolicy, FrequencyCap
from engine.preferences import Purpose


def policy() -> DecisionPolicy:
    return DecisionPolicy(catalogue=load_catalogue(RETAIL_BANK_CATALOGUE))


def test_the_policy_is_compiled_once() -> None:
    served = policy()
    assert served.compiled() is served.compiled()
    assert [a.id for a in served.compiled().actions] == [a.id for a in served.catalogue.actions]


def test_a_copy_with_fewer_actions_compiles_its_own() -> None:
    served = policy()
    served.compiled()
    kept = served.catalogue.actions[:2]
    variant = served.model_copy(
        update={"catalogue": served.catalogue.model_copy(update={"actions": kept})}
    )
    assert [a.id for a in variant.compiled().actions] == [a.id for a in kept]
    assert set(variant.purposes) == {a.id for a in kept}
    assert len(served.compiled().actions) == len(served.catalogue.actions)


def test_a_copy_with_other_frequency_caps_compiles_them() -> None:
    served = policy()
    marketing = next(a for a in served.catalogue.actions if a.purpose is Purpose.MARKETING)
    channel = marketing.channels[0]
    before = served.compiled().actions[served.catalogue.actions.index(marketing)]
    capped = ContactPolicy(
        frequency_caps=(FrequencyCap(purpose=Purpose.MARKETING, channel=channel, count=9, days=3),)
    )
    variant = served.model_copy(update={"contact": capped})
    after = variant.compiled().actions[served.catalogue.actions.index(marketing)]
    assert [(r.count, r.window.days) for r in after.frequency_caps[channel.value]] == [(9, 3)]
    assert before.frequency_caps != after.frequency_caps


def test_limited_actions_are_those_some_cap_counts() -> None:
    served = policy()
    assert served.limited == frozenset(
        a.id
        for a in served.catalogue.actions
        if a.caps or a.cooldown_days or a.purpose is Purpose.MARKETING
    )
