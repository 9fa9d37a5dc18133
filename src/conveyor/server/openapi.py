"""OpenAPI additions for endpoints that parse their own request bodies.

Every endpoint reads its raw body itself (see `wire.py`), so FastAPI does
not see the request models. `request_body` declares the model in the
operation, and `install_openapi` adds its schema to the components.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from .schemas import Problem

COMPONENT_REF = "#/components/schemas/{model}"

# Error statuses the API may return; each is a problem document.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "description": description,
        "content": {
            "application/problem+json": {
                "schema": {"$ref": COMPONENT_REF.format(model=Problem.__name__)}
            }
        },
    }
    for status, description in (
        (400, "Malformed JSON"),
        (401, "Missing or wrong bearer token"),
        (404, "Queue or message not found"),
        (409, "Conflict: the queue exists already"),
        (413, "Request body or message too large"),
        (422, "Invalid request; the detail names the field"),
    )
}

# Models that operations reference by name; install_openapi adds their schemas.
_MANUAL_MODELS: list[type[BaseModel]] = [Problem]


def request_body(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    """Return `openapi_extra` that documents `model` as the JSON request body."""
    if model not in _MANUAL_MODELS:
        _MANUAL_MODELS.append(model)
    schema_ref = {"$ref": COMPONENT_REF.format(model=model.__name__)}
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": schema_ref}},
        }
    }


def install_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` include the schemas of the manually parsed bodies."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = document.setdefault("components", {}).setdefault("schemas", {})
        for model in _MANUAL_MODELS:
            schema = model.model_json_schema(ref_template=COMPONENT_REF)
            for name, definition in schema.pop("$defs", {}).items():
                components.setdefault(name, definition)
            components[model.__name__] = schema
        app.openapi_schema = document
        return document

    app.openapi = build  # type: ignore[method-assign]
