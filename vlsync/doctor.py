"""``vlsync doctor``: does the worker's sign-in work, and does Viva Learning accept it?

It walks the worker's own path (``shared.credentials``), one link at a time, and says what to fix at
the first broken one:

1. settings: GRAPH_AUTH_MODE, VIVA_APP_CLIENT_ID, VIVA_APP_TENANT_ID;
2. the managed identity gives a token for the exchange audience;
3. the app exists in the tenant (Entra answers AADSTS700016 when it does not);
4. the app has a federated credential for that identity (AADSTS70021 and its narrower kin when not);
5. the app's Graph token carries the application role LearningContent.ReadWrite.All (admin consent);
6. the registration exists in this tenant and takes content writes from this app: a read, then a
   delete of an id that never exists (Graph answers 404; a registration bound to another app id
   refuses the write), and the ledger's record of which app registered it.

The Entra error codes are Entra's own (docs: "Microsoft Entra authentication and authorization error
codes"); the checks therefore read the same against the local stack and a real tenant. The managed
identity exists only where the app runs (the local stack, or Azure compute with the identity).
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from vlsync.app import ALL_OPTIONS, Failure, cli, config, example, options, printer, run
from vlsync.config import CliConfig

Status = Literal["pass", "fail", "skip"]
CONTENT_WRITE_ROLE = "LearningContent.ReadWrite.All"
# Entra error codes that name the federated credential (not the app) as what is missing or wrong:
# no record at all, or none matching the assertion's issuer, audience or subject.
# 7002138: a subject that matches only when case is ignored (Entra compares it case-sensitively).
_FIC_CODES = frozenset({70021, 700211, 700212, 700213, 7002138})
_APP_NOT_FOUND = 700016
_TENANT_NOT_FOUND = 90002
_AADSTS = re.compile(r"AADSTS(\d+)")
PROBE_PREFIX = "vlsync-doctor-probe-"


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def view(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, status: Status, detail: str, fix: str = "") -> Check:
        check = Check(name, status, detail, fix)
        self.checks.append(check)
        return check

    def skip_rest(self, names: tuple[str, ...], why: str) -> None:
        for name in names:
            self.add(name, "skip", why)

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)


CHECKS = ("settings", "managed identity", "app", "federated credential", "app roles", "registration")


def aadsts_codes(message: str) -> list[int]:
    return [int(code) for code in _AADSTS.findall(message)]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:400]


async def diagnose(conf: CliConfig) -> Report:
    """Run the checks in order; a broken link skips the ones that depend on it."""
    from azure.core.exceptions import AzureError
    from azure.identity.aio import ManagedIdentityCredential

    from shared.credentials import EXCHANGE_SCOPE, AppCredential
    from vlsync.operations import token_claims

    report = Report()
    mode = conf.graph_auth_mode or ("app" if conf.app_client_id else "managed-identity")
    app_id, tenant = conf.app_client_id, conf.tenant_id
    if mode != "app":
        report.add(
            "settings",
            "fail",
            f"GRAPH_AUTH_MODE={mode}: the worker pushes as the managed identity's own app id, not as the app "
            "that registers the provider; Viva Learning may refuse that content (Microsoft's draft ISV guide)",
            "deploy the app (azd provision with createVivaApp=true) and set GRAPH_AUTH_MODE=app",
        )
        report.skip_rest(CHECKS[1:], "needs GRAPH_AUTH_MODE=app")
        return report
    if not app_id or not tenant:
        missing = [
            name for name, value in (("VIVA_APP_CLIENT_ID", app_id), ("VIVA_APP_TENANT_ID", tenant)) if not value
        ]
        report.add(
            "settings",
            "fail",
            f"{' and '.join(missing)} not set",
            "azd env get-values | grep VIVA_APP (the outputs of azd provision); locally: source .dev/stack.env",
        )
        report.skip_rest(CHECKS[1:], "needs the settings")
        return report
    report.add("settings", "pass", f"GRAPH_AUTH_MODE=app, app {app_id}, tenant {tenant}")

    if conf.identity_endpoint and conf.identity_header:  # the local stack's (or App Service's) endpoint
        os.environ["IDENTITY_ENDPOINT"] = conf.identity_endpoint
        os.environ["IDENTITY_HEADER"] = conf.identity_header
    identity = ManagedIdentityCredential(client_id=conf.managed_identity_client_id)
    app_credential = AppCredential(
        identity, client_id=app_id, home_tenant=tenant, authority=conf.authority_host, **conf.tls_options()
    )
    try:
        try:
            assertion = await identity.get_token(EXCHANGE_SCOPE)
        except AzureError as exc:
            report.add(
                "managed identity",
                "fail",
                f"no token for the exchange audience: {_first_line(exc)}",
                "run doctor where the app's identity is (the local stack: source .dev/stack.env; in Azure: the "
                "function app's compute); AZURE_CLIENT_ID names the user-assigned identity",
            )
            report.skip_rest(CHECKS[2:], "needs a managed-identity token")
            return report
        mi = token_claims(assertion.token)
        issuer, subject = str(mi.get("iss", "")), str(mi.get("sub", ""))
        report.add("managed identity", "pass", f"identity {subject} (issuer {issuer})")

        try:
            token = await app_credential.get_token("https://graph.microsoft.com/.default")
        except AzureError as exc:
            _exchange_failure(report, exc, app_id, tenant, issuer, subject)
            return report
        report.add("app", "pass", f"app {app_id} exists in tenant {tenant}")
        report.add("federated credential", "pass", f"the identity {subject} signs in as the app")

        roles = sorted(str(r) for r in token_claims(token.token).get("roles") or [])
        if CONTENT_WRITE_ROLE not in roles:
            report.add(
                "app roles",
                "fail",
                f"the app's token has roles {roles or 'none'}, not {CONTENT_WRITE_ROLE}",
                f"grant admin consent: az ad app permission admin-consent --id {app_id} "
                "(a Privileged Role Administrator), or azd provision with grantGraphPermissions=true",
            )
            report.skip_rest(CHECKS[5:], "needs the role")
            return report
        report.add("app roles", "pass", f"roles {', '.join(roles)}")
        await _registration(report, conf, app_credential, app_id, tenant)
    finally:
        await app_credential.close()
    return report


def _exchange_failure(report: Report, exc: BaseException, app_id: str, tenant: str, issuer: str, subject: str) -> None:
    message = _first_line(exc)
    codes = set(aadsts_codes(str(exc)))
    if _TENANT_NOT_FOUND in codes:
        report.add("app", "fail", f"tenant {tenant} not found: {message}", "VIVA_APP_TENANT_ID must be your tenant id")
        report.skip_rest(CHECKS[3:], "needs the tenant")
    elif _APP_NOT_FOUND in codes:
        report.add(
            "app",
            "fail",
            f"app {app_id} not found in tenant {tenant}: {message}",
            "azd provision (createVivaApp=true) creates it; or an admin follows docs/deploy.md (one-time setup)",
        )
        report.skip_rest(CHECKS[3:], "needs the app")
    elif codes & _FIC_CODES:
        report.add("app", "pass", f"app {app_id} exists in tenant {tenant}")
        report.add(
            "federated credential",
            "fail",
            f"the app has no federated credential for this identity: {message}",
            f"az ad app federated-credential create --id {app_id} --parameters "
            f'\'{{"name": "vlsync-worker", "issuer": "{issuer}", "subject": "{subject}", '
            '"audiences": ["api://AzureADTokenExchange"]}\' (or azd provision)',
        )
        report.skip_rest(CHECKS[4:], "needs the federated credential")
    else:
        report.add("app", "fail", f"the exchange failed: {message}", "see the Entra error code in the message")
        report.skip_rest(CHECKS[3:], "needs the exchange")


async def _registration(
    report: Report,
    conf: CliConfig,
    credential: Any,
    app_id: str,
    tenant: str,
) -> None:
    import httpx

    from shared.graph import GraphClient, GraphError

    registration = conf.registration_id
    if not registration:  # the setup is not complete without one: a failure, not a skip
        report.add(
            "registration",
            "fail",
            "no registration id to check",
            "give --registration-id (or REGISTRATION_ID); none yet: vlsync provider register (through the app)",
        )
        return
    recorded = _recorded_app(conf, registration, tenant)
    if recorded and recorded.lower() != app_id.lower():
        report.add(
            "registration",
            "fail",
            f"the ledger says app {recorded} registered {registration}; the worker pushes as {app_id}",
            "register again through the app: vlsync provider register ... (it signs in through VIVA_APP_CLIENT_ID)",
        )
        return
    probe = PROBE_PREFIX + uuid.uuid4().hex[:12]
    async with httpx.AsyncClient(timeout=conf.timeout_seconds) as http:
        client = GraphClient(
            http, credential, root=conf.graph_root, scope="https://graph.microsoft.com/.default", tenant_id=tenant
        )
        try:
            async for _ in client.list_contents(registration, top=1):
                break
            await client.delete_content(registration, probe)  # never exists: Graph answers 404
        except GraphError as error:
            # Graph answers an unknown registration id with 400 "Invalid registrationId" (the emulator
            # does what the Graph docs' examples show) or 404; both mean "not in this tenant".
            if error.status == 404 or (error.status == 400 and "registration" in error.message.lower()):
                report.add(
                    "registration",
                    "fail",
                    f"no registration {registration} in tenant {tenant}",
                    "vlsync provider list shows the tenant's registrations; vlsync provider register makes one",
                )
            elif error.status == 403:
                report.add(
                    "registration",
                    "fail",
                    f"registration {registration} refuses content from app {app_id}: {error.message}",
                    "register again through the app (vlsync provider register signs in through VIVA_APP_CLIENT_ID)",
                )
            else:
                report.add("registration", "fail", f"Graph answered {error.status}: {error.message}")
            return
    where = f"recorded as registered by app {recorded}" if recorded else "not recorded in the ledger"
    report.add("registration", "pass", f"{registration} takes content writes from app {app_id} ({where})")


def _recorded_app(conf: CliConfig, registration: str, tenant: str) -> str | None:
    """The app id the ledger recorded for the registration, or ``None`` (not recorded, or no storage)."""
    if not conf.storage_configured:
        return None
    from dataclasses import replace

    from azure.core.exceptions import AzureError

    from vlsync import storage
    from vlsync.config import ConfigError

    try:
        rows = storage.ledger(replace(conf, tenant_id=tenant)).registrations()
    except (ConfigError, storage.StorageFailure, AzureError):
        return None
    return next((r["appId"] for r in rows if r["registrationId"] == registration), None)


@cli.command(
    "doctor",
    epilog=example(
        "set -a; . .dev/stack.env; set +a; vlsync doctor",
        "vlsync --json doctor --registration-id $REGISTRATION_ID",
        more="Run it where the app's managed identity is: the local stack, or the function app's compute.",
    ),
)
@options(*ALL_OPTIONS)
def doctor() -> None:
    """Check the worker's sign-in (app, federated credential, roles) and the registration; say what to fix."""
    conf, out = config(), printer()
    report = run(diagnose(conf))
    if out.as_json:
        out.json({"ok": report.ok, "checks": [c.view() for c in report.checks]})
    else:
        out.rows(("check", "status", "detail"), ((c.name, c.status, c.detail) for c in report.checks))
        for check in report.checks:
            if check.status == "fail" and check.fix:
                out.line(f"fix ({check.name}): {check.fix}")
    if not report.ok:
        failed = ", ".join(c.name for c in report.checks if c.status == "fail")
        raise Failure(f"doctor: {failed} failed", {"checks": [c.view() for c in report.checks]})
