"""The local Entra token endpoint's HTTP contract, and the managed-identity tokens it takes as assertions.

Raw HTTP here (the credential tests are in test_token_exchange_*.py): every refusal has Entra's
body, ``error``, AADSTS code and status (sources in ``local/identity/entra.py``).
"""

from __future__ import annotations

import json
import re
import ssl
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from local import tokens
from local.identity import FederatedCredential, IdentityServer

from .conftest import APP_CLIENT_ID, GRAPH_SCOPE, HEADER, NO_ROLE_CLIENT_ID, UAMI, UAMI_CLIENT_ID

EXCHANGE = tokens.TOKEN_EXCHANGE_AUDIENCE
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SAML_BEARER = "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"
FOREIGN_KEY = "another-signing-key-that-is-long-enough-for-hs256"


@pytest.fixture
def entra(endpoint: IdentityServer) -> Iterator[httpx.Client]:
    """A client of the HTTPS listener that trusts the local CA."""
    context = ssl.create_default_context(cafile=str(endpoint.ca_file))
    with httpx.Client(base_url=endpoint.authority_host, verify=context, timeout=5) as client:
        yield client


def msi(endpoint: IdentityServer, resource: str = EXCHANGE, client_id: str = UAMI_CLIENT_ID) -> dict[str, Any]:
    resp = httpx.get(
        endpoint.endpoint,
        params={"api-version": "2019-08-01", "resource": resource, "client_id": client_id},
        headers={"X-IDENTITY-HEADER": HEADER},
        timeout=5,
    )
    assert resp.status_code == 200, resp.text
    result: dict[str, Any] = resp.json()
    return result


def assertion_for(endpoint: IdentityServer) -> str:
    return str(msi(endpoint)["access_token"])


def minted(*, key: str | None = None, now: float | None = None, **fields: Any) -> str:
    """A v2.0 assertion as the endpoint would issue for UAMI, with ``fields`` changed."""
    claims: dict[str, Any] = {
        "audience": EXCHANGE,
        "client_id": UAMI_CLIENT_ID,
        "object_id": UAMI.object_id,
        "version": "2.0",
    }
    return tokens.mint(tokens.TokenRequest(**(claims | fields)), key=key, now=now)[0]


def form(assertion: str, **overrides: str | None) -> dict[str, str]:
    base: dict[str, str | None] = {
        "grant_type": "client_credentials",
        "client_id": APP_CLIENT_ID,
        "scope": GRAPH_SCOPE,
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
    }
    return {k: v for k, v in (base | overrides).items() if v is not None}


def post(client: httpx.Client, endpoint: IdentityServer, data: dict[str, str], **kwargs: Any) -> httpx.Response:
    return client.post(endpoint.entra_token_path, data=data, **kwargs)


def assert_entra_error(resp: httpx.Response, status: int, error: str, code: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    assert (body["error"], body["error_codes"]) == (error, [code])
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    return body


# -- the managed-identity side: tokens for the exchange audience ---------------------------------


@pytest.mark.parametrize("resource", [EXCHANGE, EXCHANGE + "/.default"])
def test_exchange_audience_token_is_a_v2_assertion_of_the_identity(endpoint: IdentityServer, resource: str) -> None:
    body = msi(endpoint, resource)

    claims = tokens.verify(body["access_token"], audiences=(EXCHANGE,))
    assert body["resource"] == EXCHANGE
    assert claims["aud"] == EXCHANGE
    assert claims["iss"] == f"https://login.microsoftonline.com/{endpoint.tenant_id}/v2.0"
    assert claims["sub"] == claims["oid"] == UAMI.object_id
    assert (claims["ver"], claims["azp"], claims["idtyp"]) == ("2.0", UAMI_CLIENT_ID, "app")
    assert "appid" not in claims
    assert "roles" not in claims  # the identity holds Graph roles; an assertion carries none
    with pytest.raises(tokens.TokenError, match="Invalid audience"):
        tokens.verify(body["access_token"])  # the Graph emulator refuses it


def test_graph_tokens_stay_v1_with_roles(endpoint: IdentityServer) -> None:
    claims = tokens.verify(msi(endpoint, "https://graph.microsoft.com")["access_token"])

    assert claims["iss"] == f"https://sts.windows.net/{endpoint.tenant_id}/"
    assert (claims["ver"], claims["appid"], claims["roles"]) == ("1.0", UAMI_CLIENT_ID, list(UAMI.roles))
    assert "azp" not in claims


# -- the token endpoint ---------------------------------------------------------------------------


def test_success_body_is_entras(endpoint: IdentityServer, entra: httpx.Client) -> None:
    resp = post(entra, endpoint, form(assertion_for(endpoint)))

    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"token_type", "expires_in", "ext_expires_in", "access_token"}
    assert (body["token_type"], body["expires_in"], body["ext_expires_in"]) == ("Bearer", 3600, 3600)
    assert tokens.verify(body["access_token"])["appid"] == APP_CLIENT_ID
    assert "no-store" in resp.headers["Cache-Control"]


@pytest.mark.parametrize(
    ("overrides", "status", "error", "code"),
    [
        ({"grant_type": None}, 400, "invalid_request", 900144),
        ({"grant_type": "authorization_code"}, 400, "unsupported_grant_type", 70003),
        ({"client_id": None}, 400, "invalid_request", 900144),
        ({"scope": None}, 400, "invalid_request", 900144),
        ({"scope": "https://graph.microsoft.com/User.Read"}, 400, "invalid_scope", 1002012),
        ({"scope": f"{GRAPH_SCOPE} https://storage.azure.com/.default"}, 400, "invalid_scope", 700022),
        ({"scope": "https://vault.azure.net/.default"}, 400, "invalid_resource", 500011),
        ({"client_assertion": None}, 401, "invalid_client", 7000218),
        ({"client_assertion": None, "client_secret": "s3cret-value"}, 401, "invalid_client", 7000215),
        ({"client_assertion_type": None}, 400, "invalid_request", 900144),
        ({"client_assertion_type": SAML_BEARER}, 400, "invalid_request", 9002313),
        ({"client_assertion": "not-a-jwt"}, 400, "invalid_request", 50027),
    ],
)  # fmt: skip
def test_request_refusals(
    endpoint: IdentityServer,
    entra: httpx.Client,
    overrides: dict[str, str | None],
    status: int,
    error: str,
    code: int,
) -> None:
    resp = post(entra, endpoint, form(assertion_for(endpoint), **overrides))

    assert_entra_error(resp, status, error, code)
    (logged,) = endpoint.requests(endpoint.entra_token_path)
    assert logged["status"] == status
    assert logged["error"].startswith(f"AADSTS{code}:")


def test_error_body_has_entras_fields_and_echoes_client_request_id(
    endpoint: IdentityServer, entra: httpx.Client
) -> None:
    resp = post(
        entra, endpoint, form(assertion_for(endpoint), grant_type="password"), headers={"client-request-id": "abc-123"}
    )

    body = assert_entra_error(resp, 400, "unsupported_grant_type", 70003)
    assert set(body) == {
        "error",
        "error_description",
        "error_codes",
        "timestamp",
        "trace_id",
        "correlation_id",
        "error_uri",
    }
    assert body["correlation_id"] == "abc-123"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", body["timestamp"])
    assert body["error_description"].endswith(
        f"\r\nTrace ID: {body['trace_id']}\r\nCorrelation ID: abc-123\r\nTimestamp: {body['timestamp']}"
    )
    assert body["error_uri"] == "https://login.microsoftonline.com/error?code=70003"


def test_unknown_tenant_and_unknown_client(endpoint: IdentityServer, entra: httpx.Client) -> None:
    assertion = assertion_for(endpoint)

    wrong_tenant = entra.post("/contoso.onmicrosoft.com/oauth2/v2.0/token", data=form(assertion))
    unknown_app = post(entra, endpoint, form(assertion, client_id="a9900000-dead-4000-8000-000000000000"))

    assert_entra_error(wrong_tenant, 400, "invalid_tenant", 90002)
    body = assert_entra_error(unknown_app, 400, "unauthorized_client", 700016)
    assert f"in the directory '{endpoint.tenant_id}'" in body["error_description"]


def test_assertion_signed_with_another_key_fails_signature_validation(
    endpoint: IdentityServer, entra: httpx.Client
) -> None:
    resp = post(entra, endpoint, form(minted(key=FOREIGN_KEY)))

    assert_entra_error(resp, 401, "invalid_client", 700027)


def test_assertion_time_range_allows_five_minutes_of_skew(endpoint: IdentityServer, entra: httpx.Client) -> None:
    hour = 3600
    expired_long_ago = minted(now=time.time() - hour - 600)
    expired_just_now = minted(now=time.time() - hour - 60)
    not_yet_valid = minted(now=time.time() + 600)

    refused = post(entra, endpoint, form(expired_long_ago))
    accepted = post(entra, endpoint, form(expired_just_now))
    early = post(entra, endpoint, form(not_yet_valid))

    body = assert_entra_error(refused, 401, "invalid_client", 700024)
    assert "Client assertion is not within its valid time range. Current time: " in body["error_description"]
    assert accepted.status_code == 200, accepted.text
    assert_entra_error(early, 401, "invalid_client", 700024)


def test_assertion_for_another_audience_is_700212(endpoint: IdentityServer, entra: httpx.Client) -> None:
    resp = post(entra, endpoint, form(minted(audience="https://graph.microsoft.com")))

    body = assert_entra_error(resp, 401, "invalid_client", 700212)
    assert "assertion audience 'https://graph.microsoft.com'" in body["error_description"]


def test_another_identity_is_700213(endpoint: IdentityServer, entra: httpx.Client) -> None:
    other = str(msi(endpoint, client_id=NO_ROLE_CLIENT_ID)["access_token"])

    resp = post(entra, endpoint, form(other))

    body = assert_entra_error(resp, 401, "invalid_client", 700213)
    assert "Check your federated identity credential Subject, Audience and Issuer" in body["error_description"]


def test_subject_is_matched_case_sensitively(endpoint: IdentityServer, entra: httpx.Client) -> None:
    app = endpoint.app(APP_CLIENT_ID)
    assert app is not None
    (fic,) = app.federated_credentials
    endpoint.put_app(replace(app, federated_credentials=(replace(fic, subject=fic.subject.upper()),)))

    resp = post(entra, endpoint, form(assertion_for(endpoint)))

    body = assert_entra_error(resp, 401, "invalid_client", 7002138)
    assert "matches with case-insensitive comparison, but not with case-sensitive" in body["error_description"]


def test_issuer_must_match_exactly(endpoint: IdentityServer, entra: httpx.Client) -> None:
    app = endpoint.app(APP_CLIENT_ID)
    assert app is not None
    (fic,) = app.federated_credentials
    trailing_slash = FederatedCredential(fic.name, fic.issuer + "/", fic.subject)
    endpoint.put_app(replace(app, federated_credentials=(trailing_slash,)))

    resp = post(entra, endpoint, form(assertion_for(endpoint)))

    assert_entra_error(resp, 401, "invalid_client", 700211)


def test_app_without_roles_gets_a_token_without_roles(endpoint: IdentityServer, entra: httpx.Client) -> None:
    """As Entra: no granted application permission is no error; Graph then refuses the token."""
    app = endpoint.app(APP_CLIENT_ID)
    assert app is not None
    endpoint.put_app(replace(app, roles=()))

    resp = post(entra, endpoint, form(assertion_for(endpoint)))

    assert resp.status_code == 200, resp.text
    assert "roles" not in tokens.verify(resp.json()["access_token"])


def test_plain_http_listener_does_not_serve_the_token_endpoint(endpoint: IdentityServer) -> None:
    resp = httpx.post(endpoint.base_url + endpoint.entra_token_path, data=form(assertion_for(endpoint)), timeout=5)

    assert resp.status_code == 404
    assert "only on the HTTPS listener" in resp.json()["message"]


def test_log_keeps_no_credentials(endpoint: IdentityServer, entra: httpx.Client) -> None:
    assertion = assertion_for(endpoint)
    post(entra, endpoint, form(assertion))
    post(entra, endpoint, form(assertion, client_assertion=None, client_secret="s3cret-value"))

    log = endpoint.requests(endpoint.entra_token_path)

    assert [e["body"]["credential"] for e in log] == [["client_assertion"], ["client_secret"]]
    assert log[0]["body"]["client_assertion_type"] == JWT_BEARER
    dumped = json.dumps(endpoint.requests(None))
    assert assertion not in dumped
    assert "s3cret-value" not in dumped
    assert "eyJ" not in dumped  # no JWT at all, the issued one included


def test_faults_apply_to_the_token_endpoint_with_entra_bodies(endpoint: IdentityServer, entra: httpx.Client) -> None:
    assertion = assertion_for(endpoint)  # before the faults: the queue serves whichever token route is next
    endpoint.inject_faults([{"status": 429, "retryAfter": 3}, {"status": 400}])

    throttled = post(entra, endpoint, form(assertion))
    bad = post(entra, endpoint, form(assertion))
    fine = post(entra, endpoint, form(assertion))

    assert_entra_error(throttled, 429, "temporarily_unavailable", 90006)
    assert throttled.headers["Retry-After"] == "3"
    assert_entra_error(bad, 400, "invalid_request", 90023)
    assert fine.status_code == 200
    assert [e.get("fault", {}).get("status") for e in endpoint.requests(endpoint.entra_token_path)] == [429, 400, None]


# -- TLS ------------------------------------------------------------------------------------------


def test_tls_certificate_is_trusted_only_through_the_local_ca(endpoint: IdentityServer) -> None:
    data = form(assertion_for(endpoint))
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.post(endpoint.token_url, data=data, timeout=5)  # httpx trusts certifi's roots by default

    context = ssl.create_default_context(cafile=str(endpoint.ca_file))
    port = endpoint.authority_host.rsplit(":", 1)[1]
    for host in ("127.0.0.1", "localhost"):  # both are in the certificate
        resp = httpx.post(f"https://{host}:{port}{endpoint.entra_token_path}", data=data, verify=context, timeout=5)
        assert resp.status_code == 200, resp.text


def test_ca_bundle_keeps_public_roots(endpoint: IdentityServer, tmp_path: Any) -> None:
    import certifi

    bundle = endpoint.ca_bundle(tmp_path / "bundle.pem")

    text = bundle.read_text()
    assert text.startswith(certifi.contents().rstrip("\n")[:200])
    assert text.endswith(endpoint.ca_file.read_text())
    context = ssl.create_default_context(cafile=str(bundle))
    assert len(context.get_ca_certs()) > 100  # certifi's roots plus ours
