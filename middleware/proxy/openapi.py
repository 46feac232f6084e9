"""The OpenAPI document, generated from the pydantic wire models.

Proxy routes read raw bytes (so unmarked requests are forwarded without parsing), which means
Litestar cannot infer their request bodies. Each route therefore names its request and response
models, and :func:`operation` turns them into an ``Operation`` class that fills the schema in;
:func:`component_schemas` collects every model's JSON Schema under ``components/schemas``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from litestar.openapi.spec import Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.openapi.spec.media_type import OpenAPIMediaType
from litestar.openapi.spec.response import OpenAPIResponse

from ragpress.middleware.serving.protocols.anthropic import AnthropicErrorResponse
from ragpress.middleware.serving.protocols.openai import ErrorResponse

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from pydantic import BaseModel

__all__ = ["ANTHROPIC_ERRORS", "OPENAI_ERRORS", "component_schemas", "operation"]

_REF = "#/components/schemas/{model}"
_HEADERS_DOC = (
    "Upstream headers are passed through. ragpress adds x-ragpress-compression "
    "(compressed | unmarked | off | failed-open), x-ragpress-method, x-ragpress-tokens-before, "
    "x-ragpress-tokens-after, x-ragpress-ratio, x-ragpress-cache-hits, x-ragpress-ms, "
    "x-ragpress-error and x-ragpress-notes when they apply, and x-ragpress-request-id."
)


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": _REF.format(model=model.__name__)}


def component_schemas(models: Iterable[type[BaseModel]]) -> dict[str, Any]:
    """JSON Schemas of ``models`` and every model they reference, keyed by model name."""
    schemas: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template=_REF, mode="serialization")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def operation(
    request: type[BaseModel] | None,
    responses: Mapping[int, tuple[str, type[BaseModel] | None]],
    *,
    streams: bool = False,
) -> type[Operation]:
    """An ``Operation`` class documenting ``request`` and ``responses`` by reference.

    Args:
        request: The JSON body model, or ``None``.
        responses: Status -> (description, body model or ``None``).
        streams: The 200 response may also be ``text/event-stream``.
    """
    documented = dict(responses)

    @dataclass
    class _Documented(Operation):
        def __post_init__(self) -> None:
            if request is not None:
                self.request_body = RequestBody(
                    content={"application/json": OpenAPIMediaType(schema=_ref(request))},  # type: ignore[arg-type]
                    required=True,
                )
            out: dict[str, OpenAPIResponse] = {}
            for status, (description, model) in documented.items():
                content = None
                if model is not None:
                    content = {"application/json": OpenAPIMediaType(schema=_ref(model))}  # type: ignore[arg-type]
                    if streams and status == 200:
                        content["text/event-stream"] = OpenAPIMediaType(
                            schema={"type": "string"}  # type: ignore[arg-type]
                        )
                text = (
                    f"{description}. {_HEADERS_DOC}" if status == 200 and streams else description
                )
                out[str(status)] = OpenAPIResponse(description=text, content=content)
            self.responses = out  # type: ignore[assignment]
            for parameter in self.parameters or []:
                if getattr(parameter, "name", None) == "path":
                    # Litestar documents a path parameter as a URI; it is a path segment here.
                    parameter.schema = Schema(  # type: ignore[union-attr]
                        type=OpenAPIType.STRING,
                        pattern=r"^[a-z][a-z0-9_.-]{0,40}$",
                        examples=["embeddings", "responses"],
                    )

    return _Documented


def _error_responses(model: type[BaseModel]) -> dict[int, tuple[str, type[BaseModel]]]:
    return {
        400: ("Bad request (the message names the field)", model),
        401: ("Missing or invalid ragpress API key", model),
        413: ("Request body over RAGPRESS_PROXY__MAX_BODY_BYTES", model),
        502: ("The upstream could not be reached or broke off", model),
        504: ("The upstream did not answer in time", model),
    }


OPENAI_ERRORS = _error_responses(ErrorResponse)
"""The error answers of OpenAI-shaped routes, for :func:`operation`."""
ANTHROPIC_ERRORS = _error_responses(AnthropicErrorResponse)
"""The error answers of Anthropic-shaped routes, for :func:`operation`."""
