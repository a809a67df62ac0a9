"""The test kit's fixtures (quart_auth_app's pytest plugin) on this app instead of the bare one."""

from __future__ import annotations

import pytest
from notes_app import create_app


@pytest.fixture
def auth_app_factory():
    return create_app


@pytest.fixture
def auth_app_config():
    return {"SESSION_IDLE_TIMEOUT": 600}
