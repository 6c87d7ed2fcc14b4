from datetime import datetime

from fastapi import APIRouter, Response

from api.auth import require
from api.bounds import context_violation
from api.console.simulator import simulate
from api.deps import DecisionServing, ForDecisions, Store
from api.errors import invalid_request
from api.schemas import DecisionIn, DecisionOut, decision_answer
from api.serving import decide_for, logged_decision, new_decision_id
from engine.decide import degraded_decision
from engine.decision import Decision
from engine.identity import HashedIdentity
from feature_store.credentials import Scope
from feature_store.errors import StoreUnavailable

router = APIRouter(prefix="/v1/decisions", tags=["decisions"])
JSON = "application/json"


@router.post(
    "",
    response_model=DecisionOut,  # for the OpenAPI document: the answer is serialised once
    dependencies=[require(Scope.DECISIONS)],
)
async def post_decision(question: DecisionIn, serving: ForDecisions) -> Response:
    """Next-best-actions, personalised defaults and the contact channel for this customer at
    this touchpoint, each with its reasons; every decision is logged with its candidates.

    Never fails for store trouble: answers `degraded: true` with nothing personal instead.
    """
    return answer(question, serving)


def answer(question: DecisionIn, serving: DecisionServing) -> Response:
    """The answer to a validated question: the route's, and the fast lane's (`api.fast_lane`),
    which serves the same question without the router's walk and the dependencies."""
    violation = context_violation(question.context, serving.bounds)
    if violation is not None:
        return invalid_request(f"body.{violation[0]}", violation[1])
    # Synchronous on the loop, so no thread hop: the store's calls are short round trips.
    identity = question.identity.hashed(serving.identity_secret) if question.identity else None
    at = question.at or serving.now
    if question.dry_run:
        return Response(decision_answer(dry_run(question, serving, identity, at)), media_type=JSON)
    decision = decide_for(
        serving.store,
        question.as_request(),
        at=at,
        identity=identity,
        policy=serving.policy,
        scorer=serving.scorer,
        assigner=serving.experiments.assigner(at),
        population=serving.population,
    )
    return Response(decision_answer(decision), media_type=JSON)


def dry_run(
    question: DecisionIn, serving: DecisionServing, identity: HashedIdentity | None, at: datetime
) -> Decision:
    """The decision without a trace: computed by the console's simulator, which reads the store
    through a read-only view (nothing logged, no exposure counted)."""
    try:
        return simulate(
            serving.store,
            question.as_request(),
            at=at,
            policy=serving.policy,
            scorer=serving.scorer,
            assigner=serving.experiments.assigner(at),
            identity=identity,
        ).decision
    except StoreUnavailable:
        return degraded_decision(
            question.as_request(), decision_id=f"dry_{new_decision_id()}", at=at
        )


@router.get("/{decision_id}", response_model=Decision, dependencies=[require(Scope.CUSTOMERS_READ)])
def get_decision(decision_id: str, store: Store) -> Decision:
    """The logged decision with every candidate considered: why it was dropped (rule,
    consent, policy, cap) or how it scored, and what was returned with which probability."""
    return logged_decision(store, decision_id)
