"""The OpenAPI document, with what quart-schema leaves out of it.

Bodiless 204 answers, request bodies that are required, and the Retry-After
header of a 429 — so the document says exactly what the API does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quart_schema import DataSource, OpenAPIProvider
from quart_schema.typing import Model

RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 1},
    }
}


@dataclass
class NoContent:
    """No body: the status says it all."""


class OpenAPI(OpenAPIProvider):
    """quart-schema's provider, made precise about empty answers, bodies and throttling."""

    _document: dict[str, Any] | None = None

    def build_response_object(
        self, model: type[Model], headers_model: type[Model] | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if model is NoContent:
            return {"description": "No content."}, {}
        return super().build_response_object(model, headers_model)

    def build_request_body(
        self, model: type[Model], source: DataSource
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        body, definitions = super().build_request_body(model, source)
        body["required"] = True
        return body, definitions

    def schema(self) -> dict[str, Any]:
        """The document, built on first use only: the routes do not change while serving,
        and building it costs 20-30 ms of CPU (rebuilt per request, /openapi.json alone
        saturated the server at ~90 requests/s)."""
        if self._document is None:
            self._document = self._build()
        return self._document

    def _build(self) -> dict[str, Any]:
        document = super().schema()
        for operations in document["paths"].values():
            for operation in operations.values():
                throttled = operation.get("responses", {}).get("429")
                if throttled is not None:
                    throttled["headers"] = RETRY_AFTER
        return document
