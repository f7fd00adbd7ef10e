"""The Entra token endpoint's client-credentials grant with a federated client assertion, as Entra answers it.

``POST /{tenant}/oauth2/v2.0/token`` (route in ``app.py``) is the second half of the managed
identity → app exchange: ``ClientAssertionCredential`` presents a managed-identity token for
``api://AzureADTokenExchange`` as ``client_assertion`` and gets a Graph app token for the app whose
federated credential trusts that identity. This module holds the protocol: which request is refused
with which Entra error, and the success body.

Sources for the errors (``error``, the AADSTS code, the HTTP status, the wording):

* Body shape ``{"error", "error_description": "AADSTS<n>: …\\r\\nTrace ID: …\\r\\nCorrelation ID: …\\r\\n
  Timestamp: …", "error_codes": [n], "timestamp": "YYYY-MM-DD HH:MM:SSZ", "trace_id",
  "correlation_id", "error_uri"}``: Entra's error-code reference (learn.microsoft.com/entra/
  identity-platform/reference-error-codes, sample response and field table).
* Codes and their one-line meanings: the same reference's AADSTS table (90002, 700016, 1002012,
  700022, 500011, 70003, 900144, 7000215, 7000218, 700024, 700027, 50027, 9002313).
* ``error`` and status seen in real responses quoted in GitHub issues: 90002 ``invalid_tenant``
  400 (microsoftgraph/windowsupdates-webapplication-sample#6, sjkp/letsencrypt-siteextension#108);
  7000215 ``invalid_client`` 401 (BookStackApp/BookStack#4089); 7000218 ``invalid_client``
  (Azure-Samples/ms-identity-javascript-v2#18) and its older code 70002 at 401
  (microsoft/Recurring-Integrations-Scheduler#64); 700024 ``invalid_client`` (obikuro/Sato#1);
  1002012 ``invalid_scope`` (databricks/databricks-sql-nodejs#226); 500011 ``invalid_resource``
  (rootinc/laravel-azure-middleware#51); 70003 ``unsupported_grant_type``
  (AzureAD/azure-activedirectory-library-for-android#132); 900144 ``invalid_request``
  (MicrosoftDocs/azure-docs#43780); 70021 ``invalid_request`` 400 with "Assertion Issuer/Subject/
  Audience" (Azure/azure-workload-identity#616 and its troubleshooting page); 700213 and 7002138
  wording (dotnet/maui#31978, Azure/login#515); 700211 with ``invalid_client``
  (Azure/azure-workload-identity#1200); 7002137 ``invalid_client`` 401 (microsoft/Agents#202).
* Inferred, not seen: 700016 ``unauthorized_client`` at 400 (the reference's table says
  ``unauthorized_client`` is for "client application isn't registered"; OAuth errors other than
  ``invalid_client`` are 400 per RFC 6749 §5.2); 700211/700212/700213/7002138 at 401 like 7002137;
  700212's wording (by analogy with 700213); 70021 only when the app has no federated credential
  at all (an app with some gets the specific 70021x code); 50027 and 9002313 as ``invalid_request``
  400; 700027 at 401 (``invalid_client``); the order of the checks (request shape, then client,
  then credential); a 5-minute clock skew for the assertion's time range (Microsoft.IdentityModel's
  default ``ClockSkew``; Entra's own allowance is not documented).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from local import tokens

from .config import AppRegistration, FederatedCredential, IdentityConfig

GRANT_TYPE = "client_credentials"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLOCK_SKEW_SECONDS = 300
WIF_DOCS = "https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
# Only Graph is a resource of the local tenant; either of its identifiers names it in a scope.
GRAPH_RESOURCES = frozenset({tokens.GRAPH_AUDIENCE.lower(), tokens.GRAPH_APP_ID})
# What the log may keep of a token request: everything but the credentials themselves.
LOGGED_FIELDS = ("grant_type", "client_id", "scope", "client_assertion_type")


@dataclass
class EntraError(Exception):
    """A refusal, rendered as Entra's JSON error body by :meth:`body`."""

    status: int
    error: str
    code: int
    description: str

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return f"AADSTS{self.code}: {self.description}"

    def body(self, correlation_id: str | None = None, now: float | None = None) -> dict[str, Any]:
        """Entra echoes the caller's ``client-request-id`` as ``correlation_id``; otherwise it makes one."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(now))
        trace_id, correlation = str(uuid.uuid4()), correlation_id or str(uuid.uuid4())
        return {
            "error": self.error,
            "error_description": (
                f"{self.message}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation}\r\nTimestamp: {stamp}"
            ),
            "error_codes": [self.code],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.code}",
        }


def _missing(name: str) -> EntraError:
    return EntraError(
        400, "invalid_request", 900144, f"The request body must contain the following parameter: '{name}'."
    )


def injected(status: int) -> EntraError:
    """The Entra-shaped error of an injected fault (``/_identity/faults/next`` without a body)."""
    if status >= 500 or status == 429:
        return EntraError(status, "temporarily_unavailable", 90006, "Injected fault (local identity endpoint).")
    return EntraError(status, "invalid_request", 90023, "Injected fault (local identity endpoint).")


def check_tenant(tenant: str, config: IdentityConfig) -> None:
    """The local directory has one tenant, named by its id (verified domains are not emulated)."""
    if tenant.lower() != config.tenant_id.lower():
        raise EntraError(
            400,
            "invalid_tenant",
            90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing "
            "into the correct cloud. Check with your subscription administrator, this may happen if there are "
            "no active subscriptions for the tenant.",
        )


def required(form: Mapping[str, str], name: str) -> str:
    value = form.get(name, "").strip()
    if not value:
        raise _missing(name)
    return value


def check_grant_type(form: Mapping[str, str]) -> None:
    """Only the client-credentials grant is emulated; any other is refused as Entra refuses unknown ones."""
    grant_type = required(form, "grant_type")
    if grant_type != GRANT_TYPE:
        raise EntraError(
            400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant_type}'."
        )


def unknown_client(client_id: str, tenant_id: str) -> EntraError:
    return EntraError(
        400,
        "unauthorized_client",
        700016,
        f"Application with identifier '{client_id}' was not found in the directory '{tenant_id}'. This can happen "
        "if the application has not been installed by the administrator of the tenant or consented to by any "
        "user in the tenant. You may have sent your authentication request to the wrong tenant.",
    )


def client_credentials_resource(scope: str, tenant_id: str) -> str:
    """The one resource of a client-credentials ``scope``: ``<resource>/.default``, and the resource is Graph."""
    scopes = scope.split()
    if not scopes:
        raise _missing("scope")
    for item in scopes:
        if not item.endswith("/.default"):
            raise EntraError(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {item} is not valid. Client credential flows must have a scope "
                "value with /.default suffixed to the resource identifier (application ID URI).",
            )
    # "https://graph.microsoft.com//.default" (a v1 resource with a trailing slash) is the same resource.
    resources = {item.removesuffix("/.default").rstrip("/") for item in scopes}
    if len(resources) > 1:
        raise EntraError(
            400,
            "invalid_scope",
            700022,
            f"The provided value for the input parameter scope is not valid because it contains more than one "
            f"resource. Scope {scope} is not valid.",
        )
    (resource,) = resources
    if resource.lower() not in GRAPH_RESOURCES:
        raise EntraError(
            400,
            "invalid_resource",
            500011,
            f"The resource principal named {resource} was not found in the tenant named {tenant_id}. This can "
            "happen if the application has not been installed by the administrator of the tenant or consented "
            "to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
        )
    return resource


def client_assertion(form: Mapping[str, str], app: AppRegistration) -> str:
    """The assertion the request authenticates with; local apps have no secrets, so a secret never matches."""
    if form.get("client_secret"):
        raise EntraError(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
            f"value, not the client secret ID, for a secret added to app '{app.client_id}'.",
        )
    assertion = form.get("client_assertion", "").strip()
    if not assertion:
        raise EntraError(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )
    assertion_type = required(form, "client_assertion_type")
    if assertion_type != JWT_BEARER:
        raise EntraError(400, "invalid_request", 9002313, "Invalid request. Request is malformed or invalid.")
    return assertion


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.0000000Z", time.gmtime(epoch))


def verify_assertion(assertion: str, *, key: str | None, now: float | None = None) -> dict[str, Any]:
    """Signature (the local key stands for every issuer's keys) and time range; the claims, for matching."""
    try:
        claims = tokens.verify(assertion, key=key, audiences=None, check_lifetime=False)
    except tokens.TokenSignatureError as exc:
        raise EntraError(401, "invalid_client", 700027, "Client assertion failed signature validation.") from exc
    except tokens.TokenError as exc:
        raise EntraError(400, "invalid_request", 50027, "JWT token is invalid or malformed.") from exc
    expires, not_before = claims.get("exp"), claims.get("nbf", claims.get("iat", 0))
    if not isinstance(expires, int | float) or not isinstance(not_before, int | float):
        raise EntraError(400, "invalid_request", 50027, "JWT token is invalid or malformed.")
    current = time.time() if now is None else now
    if current > expires + CLOCK_SKEW_SECONDS or current + CLOCK_SKEW_SECONDS < not_before:
        raise EntraError(
            401,
            "invalid_client",
            700024,
            f"Client assertion is not within its valid time range. Current time: {_iso(current)}, assertion "
            f"valid from {_iso(not_before)}, expiry time of assertion {_iso(expires)}. Review the documentation "
            "at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
        )
    return claims


def match_federated_credential(app: AppRegistration, claims: Mapping[str, Any]) -> FederatedCredential:
    """The app's credential that trusts the assertion: issuer, then subject, then audience, all case-sensitive."""
    issuer, subject = str(claims.get("iss", "")), str(claims.get("sub", ""))
    raw_aud = claims.get("aud", "")
    audiences = [str(a) for a in raw_aud] if isinstance(raw_aud, list) else [str(raw_aud)]
    fics = app.federated_credentials
    if not fics:
        raise EntraError(
            400,
            "invalid_request",
            70021,
            "No matching federated identity record found for presented assertion. "
            f"Assertion Issuer: '{issuer}'. Assertion Subject: '{subject}'. "
            f"Assertion Audience: '{','.join(audiences)}'. {WIF_DOCS}",
        )
    check = (
        "Check your federated identity credential Subject, Audience and Issuer against the presented assertion. "
        + WIF_DOCS
    )
    by_issuer = [f for f in fics if f.issuer == issuer]
    if not by_issuer:
        raise EntraError(
            401,
            "invalid_client",
            700211,
            f"No matching federated identity record found for presented assertion issuer '{issuer}'. {check}",
        )
    by_subject = [f for f in by_issuer if f.subject == subject]
    if not by_subject:
        if any(f.subject.lower() == subject.lower() for f in by_issuer):
            raise EntraError(
                401,
                "invalid_client",
                7002138,
                f"No matching federated identity record found for presented assertion subject '{subject}'. The "
                f"subject matches with case-insensitive comparison, but not with case-sensitive comparison. {check}",
            )
        raise EntraError(
            401,
            "invalid_client",
            700213,
            f"No matching federated identity record found for presented assertion subject '{subject}'. {check}",
        )
    for fic in by_subject:
        if any(aud in fic.audiences for aud in audiences):
            return fic
    raise EntraError(
        401,
        "invalid_client",
        700212,
        f"No matching federated identity record found for presented assertion audience '{','.join(audiences)}'. "
        f"{check}",
    )


def app_token_body(app: AppRegistration, config: IdentityConfig) -> dict[str, Any]:
    """Entra's v2.0 success body; the token is a v1.0 Graph app token, as Graph's tokens are."""
    request = tokens.TokenRequest(
        audience=tokens.GRAPH_AUDIENCE,
        tenant_id=config.tenant_id,
        client_id=app.client_id,
        object_id=app.object_id,
        roles=app.roles,
        lifetime_seconds=config.lifetime_seconds,
    )
    token, _ = tokens.mint(request, key=config.signing_key)
    return {
        "token_type": "Bearer",
        "expires_in": config.lifetime_seconds,
        "ext_expires_in": config.lifetime_seconds,
        "access_token": token,
    }
