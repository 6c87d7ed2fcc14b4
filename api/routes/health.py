from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import Store
from feature_store.errors import StoreUnavailable

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(store: Store) -> JSONResponse:
    """Readiness: the store answers."""
    try:
        store.ping()
    except StoreUnavailable as exc:
        return JSONResponse(status_code=503, content={"status": "unavailable", "store": str(exc)})
    return JSONResponse(content={"status": "ok", "store": "ok"})
