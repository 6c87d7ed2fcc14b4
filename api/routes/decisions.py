from fastapi import APIRouter, Response

from api.auth import require
from api.bounds import context_violation
from api.deps import ForDecisions, Store
from api.errors import invalid_request
from api.schemas import DecisionIn, DecisionOut, decision_answer
from api.serving import decide_for, logged_decision
from engine.decision import Decision
from feature_store.credentials import Scope

router = APIRouter(prefix="/v1/decisions", tags=["decisions"])


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
    violation = context_violation(question.context, serving.bounds)
    if violation is not None:
        return invalid_request(f"body.{violation[0]}", violation[1])
    # Async, so no thread hop: the store's calls are short and synchronous, made on the loop.
    identity = question.identity.hashed(serving.identity_secret) if question.identity else None
    at = question.at or serving.now
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
    return Response(decision_answer(decision), media_type="application/json")


@router.get("/{decision_id}", response_model=Decision, dependencies=[require(Scope.CUSTOMERS_READ)])
def get_decision(decision_id: str, store: Store) -> Decision:
    """The logged decision with every candidate considered: why it was dropped (rule,
    consent, policy, cap) or how it scored, and what was returned with which probability."""
    return logged_decision(store, decision_id)
