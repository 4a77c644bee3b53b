"""admission.k8s.io/v1 AdmissionReview on the wire, typed with msgspec (request in, response out)."""

from __future__ import annotations

from typing import Any

import msgspec

API_VERSION = "admission.k8s.io/v1"


class GroupVersionKind(msgspec.Struct, frozen=True):
    group: str = ""
    version: str = ""
    kind: str = ""


class GroupVersionResource(msgspec.Struct, frozen=True):
    group: str = ""
    version: str = ""
    resource: str = ""


class UserInfo(msgspec.Struct, frozen=True):
    username: str = ""
    groups: list[str] = []


class AdmissionRequest(msgspec.Struct, frozen=True, rename="camel"):
    """The fields of request the webhook reads; object/oldObject stay plain dicts for the policy core."""

    uid: str
    kind: GroupVersionKind
    resource: GroupVersionResource
    operation: str
    namespace: str = ""
    name: str = ""
    sub_resource: str = ""
    user_info: UserInfo = UserInfo()
    object: dict[str, Any] | None = None
    old_object: dict[str, Any] | None = None
    dry_run: bool = False


class AdmissionReview(msgspec.Struct, frozen=True, rename="camel"):
    request: AdmissionRequest
    api_version: str = API_VERSION
    kind: str = "AdmissionReview"


class Status(msgspec.Struct, frozen=True, omit_defaults=True):
    code: int
    message: str
    reason: str = ""


class AdmissionResponse(msgspec.Struct, frozen=True, omit_defaults=True):
    uid: str
    allowed: bool
    status: Status | None = None
    warnings: list[str] = []


class AdmissionReviewResponse(msgspec.Struct, frozen=True, rename="camel"):
    response: AdmissionResponse
    api_version: str = API_VERSION
    kind: str = "AdmissionReview"


_decoder = msgspec.json.Decoder(AdmissionReview)
_encoder = msgspec.json.Encoder()


def decode_review(body: bytes) -> AdmissionReview:
    """Raises msgspec.ValidationError / msgspec.DecodeError on a malformed review."""
    return _decoder.decode(body)


def encode_response(uid: str, allowed: bool, message: str) -> bytes:
    """The reply; a denial carries 403 Forbidden and the one-line message kubectl prints."""
    status = None if allowed else Status(code=403, message=message, reason="Forbidden")
    return _encoder.encode(AdmissionReviewResponse(AdmissionResponse(uid=uid, allowed=allowed, status=status)))
