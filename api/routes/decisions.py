from fastapi import APIRouter

from api.auth import require
from api.deps import ExperimentAssignment, IdentitySecret, Now, Policy, ServedModel, Store
from api.schemas import DecisionIn, DecisionOut
from api.serving import decide_for, logged_decision
from engine.decision import Decision
from feature_store.credentials import Scope

router = APIRouter(prefix="/v1/decisions", tags=["decisions"])


@router.post("", response_model=DecisionOut, dependencies=[require(Scope.DECISIONS)])
def post_decision(
    question: DecisionIn,
    store: Store,
    secret: IdentitySecret,
    policy: Policy,
    now: Now,
    scorer: ServedModel,
    experiments: ExperimentAssignment,
) -> DecisionOut:
    """Next-best-actions, personalised defaults and the contact channel for this customer at
    this touchpoint, each with its reasons; every decision is logged with its candidates.

    Never fails for store trouble: answers `degraded: true` with nothing personal instead.
    """
    identity = question.identity.hashed(secret) if question.identity else None
    at = question.at or now
    decision = decide_for(
        store,
        question.as_request(),
        at=at,
        identity=identity,
        policy=policy,
        scorer=scorer,
        assigner=experiments.assigner(at),
    )
    return DecisionOut.of(decision)


@router.get("/{decision_id}", response_model=Decision, dependencies=[require(Scope.CUSTOMERS_READ)])
def get_decision(decision_id: str, store: Store) -> Decision:
    """The logged decision with every candidate considered: why it was dropped (rule,
    consent, policy, cap) or how it scored, and what was returned with which probability."""
    return logged_decision(store, decision_id)
