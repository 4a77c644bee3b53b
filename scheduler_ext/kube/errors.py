"""One error hierarchy for what the API server answers (modelled on kopf's APIError family).

Every way Cell talks to the API (the raw client, the dynamic client, the generated client's
ApiException) ends in one of these, so callers catch by meaning (`APINotFoundError`,
`APIConflictError`, `APIGoneError`) instead of comparing status codes.
"""

from __future__ import annotations

from typing import Any

import msgspec


class APIError(Exception):
    """The API server answered with an error status (or a watch delivered an ERROR event)."""

    def __init__(self, status: int, message: str = "", reason: str = "", where: str = "") -> None:
        self.status, self.message, self.reason, self.where = status, message, reason, where
        text = f"{status} {reason}".strip() + (f": {message}" if message else "")
        super().__init__(f"{where}: {text}" if where else text)


class APIClientError(APIError):
    """4xx: the request cannot succeed as it is."""


class APIServerError(APIError):
    """5xx: the API server (or what is behind it) failed."""


class APIBadRequestError(APIClientError):
    """400."""


class APIUnauthorizedError(APIClientError):
    """401: the credentials are not accepted."""


class APIForbiddenError(APIClientError):
    """403: RBAC does not allow it."""


class APINotFoundError(APIClientError):
    """404: no such object, or the resource is not served (a CRD not installed yet)."""


class APIConflictError(APIClientError):
    """409: the object changed since it was read (resourceVersion precondition), or already exists."""


class APIGoneError(APIClientError):
    """410: the watch's resourceVersion is too old; list again."""


class APIUnprocessableEntityError(APIClientError):
    """422: the object is invalid."""


class APITooManyRequestsError(APIClientError):
    """429: throttled, or an Eviction a PodDisruptionBudget refuses for now."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: APIBadRequestError, 401: APIUnauthorizedError, 403: APIForbiddenError, 404: APINotFoundError,
    409: APIConflictError, 410: APIGoneError, 422: APIUnprocessableEntityError, 429: APITooManyRequestsError,
}


def api_error(status: int, body: Any = None, where: str = "") -> APIError:
    """The error for a status and its body (a Status object as bytes, str or dict, or anything else)."""
    status_obj: Any = body
    if isinstance(body, bytes | str):
        try:
            status_obj = msgspec.json.decode(body)
        except msgspec.DecodeError:
            status_obj = {"message": (body.decode(errors="replace") if isinstance(body, bytes) else body).strip()}
    message = reason = ""
    if isinstance(status_obj, dict):
        message, reason = str(status_obj.get("message") or ""), str(status_obj.get("reason") or "")
    cls = _BY_STATUS.get(status) or (APIServerError if status >= 500 else APIClientError if status >= 400
                                     else APIError)
    return cls(status, message[:500], reason, where)


def from_exception(exc: Any, where: str = "") -> APIError:
    """The error for the generated client's ApiException (or the dynamic client's DynamicApiError)."""
    return api_error(int(getattr(exc, "status", 0) or 0), getattr(exc, "body", None) or
                     {"reason": getattr(exc, "reason", "")}, where)
