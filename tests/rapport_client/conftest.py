"""The client is tested against the real app: the API tests' live server and settings."""

from tests.api.conftest import server, settings

__all__ = ["server", "settings"]
