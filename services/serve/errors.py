"""OpenAI-style error bodies: every failure the endpoint answers is `{"error": {message, type, param, code}}` with
the status OpenAI uses for it, so the official clients raise their usual exceptions (NotFoundError, BadRequestError,
AuthenticationError, ...) with a message that names the field and the value.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"


class OpenAIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def cause_of(exc: BaseException) -> BaseException:
    """The original exception inside Ray's task-error wrappers (their str() carries a whole traceback)."""
    while getattr(exc, "cause", None) is not None and exc.cause is not exc:  # type: ignore[attr-defined]
        exc = exc.cause  # type: ignore[attr-defined]
    return exc


def bad_request(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


def model_not_found(model: str, served: list[str]) -> OpenAIError:
    return OpenAIError(
        404,
        f"The model {model!r} does not exist on this endpoint; served: {', '.join(served) or 'none'}",
        param="model",
        code="model_not_found",
    )


def unauthorized(message: str) -> OpenAIError:
    return OpenAIError(401, message, code="invalid_api_key")


def service_unavailable(message: str) -> OpenAIError:
    return OpenAIError(503, message, type_="server_error", code="engine_unavailable")


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """(one readable message, the first dotted parameter) from pydantic/FastAPI validation errors."""
    lines = []
    params = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        if err.get("type") == "extra_forbidden":
            lines.append(f"Unrecognized request argument supplied: {param}")
        elif err.get("type") == "json_invalid":
            lines.append(f"The request body is not valid JSON: {err.get('ctx', {}).get('error', err.get('msg'))}")
            param = None
        elif err.get("type") == "missing":
            lines.append(f"{param}: required parameter is missing")
        else:
            shown = repr(err.get("input"))
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            message = str(err.get("msg", "")).removeprefix("Value error, ")
            lines.append(f"{param or 'body'} = {shown}: {message}")
        params.append(param)
    return "; ".join(lines) or "invalid request", next((p for p in params if p), None)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OpenAIError)
    async def _openai(_: Request, exc: OpenAIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(list(exc.errors()))
        return bad_request(message, param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return OpenAIError(404, f"Unknown route {request.method} {request.url.path}", code="unknown_url").response()
        return OpenAIError(exc.status_code, str(exc.detail)).response()

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # The exception's text can hold server paths and internals: it goes to the log under an id the caller gets.
        error_id = uuid.uuid4().hex[:12]
        log.exception("request failed (error %s)", error_id)
        message = f"internal error {error_id} ({type(exc).__name__}); the server's log has the details"
        return OpenAIError(500, message, type_="server_error").response()
