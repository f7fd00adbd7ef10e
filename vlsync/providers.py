"""``vlsync provider …``: register, update, get, list, delete a learning provider (delegated token), and
disable/enable the app's pushing for one registration (ledger + held queue)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

import click

from vlsync.app import (
    GRAPH_OPTIONS,
    OUTPUT_OPTIONS,
    STORAGE_OPTIONS,
    Failure,
    announce,
    checked,
    cli,
    comma_list,
    config,
    example,
    graph,
    options,
    printer,
    run,
    shared_option,
    valid_id,
    write_target,
)
from vlsync.config import CliConfig
from vlsync.output import Printer

if TYPE_CHECKING:
    from shared.ledger import Ledger
    from vlsync.operations import BatchResult, Target

F = TypeVar("F", bound=Callable[..., Any])

SHOWN = (
    "id",
    "displayName",
    "loginWebUrl",
    "isCourseActivitySyncEnabled",
    "squareLogoWebUrlForLightTheme",
    "longLogoWebUrlForLightTheme",
    "squareLogoWebUrlForDarkTheme",
    "longLogoWebUrlForDarkTheme",
)
CONTENT_FATE = (
    "Graph does not document what happens to the provider's content when the provider is deleted "
    "(the local emulator deletes it with the provider). To be sure, delete or deactivate the content first."
)
SETTLE_OPTION = shared_option(
    "--settle-seconds",
    "state_cache_seconds",
    type=click.FloatRange(min=0),
    help="How long function-app workers may trust a cached enabled/disabled state; env "
    "REGISTRATION_STATE_CACHE_SECONDS [10]. enable releases held commands again after it.",
)


@cli.group(
    epilog=example(
        "vlsync provider list",
        "vlsync provider disable 2b8c… --deactivate-content",
    )
)
def provider() -> None:
    """Learning providers (registrations) in Viva Learning. Graph accepts only DELEGATED tokens for
    these calls: a signed-in Global administrator or Knowledge administrator with a Viva Learning
    (or Viva Suite) licence."""


LOGOS = (
    ("--square-logo-light", "square_light", "square, light-theme"),
    ("--long-logo-light", "long_light", "long (wide), light-theme"),
    ("--square-logo-dark", "square_dark", "square, dark-theme"),
    ("--long-logo-dark", "long_dark", "long (wide), dark-theme"),
)


def logo_options(required: bool) -> Callable[[F], F]:
    def apply(func: F) -> F:
        for flag, name, what in reversed(LOGOS):
            func = click.option(flag, name, required=required, help=f"Public URL of the {what} logo image.")(func)
        return func

    return apply


def provider_body(
    *,
    display_name: str | None,
    square_light: str | None,
    long_light: str | None,
    square_dark: str | None,
    long_dark: str | None,
    login_url: str | None,
    course_activity_sync: bool | None,
) -> dict[str, Any]:
    """The Graph properties the options name (only those given)."""
    values = {
        "displayName": display_name,
        "squareLogoWebUrlForLightTheme": square_light,
        "longLogoWebUrlForLightTheme": long_light,
        "squareLogoWebUrlForDarkTheme": square_dark,
        "longLogoWebUrlForDarkTheme": long_dark,
        "loginWebUrl": login_url,
        "isCourseActivitySyncEnabled": course_activity_sync,
    }
    return {k: v for k, v in values.items() if v is not None}


def _show_provider(out: Printer, item: dict[str, Any]) -> None:
    out.fields(
        {k: item.get(k) for k in SHOWN if k in item}
        | {k: v for k, v in item.items() if k not in SHOWN and not k.startswith("@")}
    )


# -- register / update ---------------------------------------------------------------------------------


@provider.command(
    "register",
    epilog=example(
        'vlsync provider register --display-name "Contoso LMS" \\',
        "  --square-logo-light https://lms.contoso.com/logo/sq-light.png \\",
        "  --long-logo-light https://lms.contoso.com/logo/long-light.png \\",
        "  --square-logo-dark https://lms.contoso.com/logo/sq-dark.png \\",
        "  --long-logo-dark https://lms.contoso.com/logo/long-dark.png \\",
        "  --login-url https://lms.contoso.com/login --no-course-activity-sync",
        more="Logos must be publicly reachable images (Viva Learning copies them). "
        "--quiet prints only the new registrationId: REG=$(vlsync provider register ... --quiet)",
    ),
)
@click.option("--display-name", "display_name", required=True, help="Name shown in Viva Learning.")
@logo_options(required=True)
@click.option("--login-url", "login_url", help="Sign-in URL of the provider's courses.")
@click.option(
    "--course-activity-sync/--no-course-activity-sync",
    "course_activity_sync",
    default=None,
    help="Allow course-activity (assignment/progress) sync [Graph's default: off].",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only the new registrationId.")
@options(OUTPUT_OPTIONS, GRAPH_OPTIONS, STORAGE_OPTIONS)
def register(
    display_name: str,
    square_light: str,
    long_light: str,
    square_dark: str,
    long_dark: str,
    login_url: str | None,
    course_activity_sync: bool | None,
    quiet: bool,
) -> None:
    """Register a learning provider; prints its id, the registrationId every content call needs."""
    body = provider_body(
        display_name=display_name,
        square_light=square_light,
        long_light=long_light,
        square_dark=square_dark,
        long_dark=long_dark,
        login_url=login_url,
        course_activity_sync=course_activity_sync,
    )
    from pydantic import ValidationError

    from shared.models import LearningProvider

    try:  # the rules the Graph docs state, checked before anything is sent
        LearningProvider.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'/'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False))
        raise click.UsageError(f"invalid provider: {problems}") from None
    from vlsync import operations

    conf, out = config(), printer()
    target = write_target(conf, "new", storage=conf.storage_configured)

    async def go() -> dict[str, Any]:
        async with graph("provider", conf, out, target=target) as client:
            return await operations.register_provider(client, body)

    created = run(go())
    binding = _record_registration(conf, out, target, created)
    if quiet:
        click.echo(created["id"])
    elif out.as_json:
        out.json({**created, "target": target.view(), "registeredBy": binding})
    else:
        out.line(f"registered learning provider {created.get('displayName')!r}")
        out.line(f"registrationId: {created['id']}")
        out.note(f"registered through app {binding['appId']} in tenant {binding['tenantId']}")


def _record_registration(conf: CliConfig, out: Printer, target: Target, created: dict[str, Any]) -> dict[str, Any]:
    """Record which app registered the provider in which tenant (ledger), and warn when the worker pushes
    as another app: Viva Learning binds a registration to the app that made it (draft ISV guide)."""
    from vlsync import storage

    app_id, tenant = target.app_id or "", target.tenant or ""
    binding: dict[str, Any] = {"appId": app_id, "tenantId": tenant, "recordedInLedger": False}
    if conf.app_client_id and app_id and app_id.lower() != conf.app_client_id.lower():
        out.note(
            f"warning: registered through app {app_id}, but the worker pushes as app {conf.app_client_id} "
            "(VIVA_APP_CLIENT_ID): Viva Learning may refuse its content. Register through the app: "
            "--client-id $VIVA_APP_CLIENT_ID (see vlsync doctor)"
        )
    if conf.storage_configured and tenant and app_id:
        from azure.core.exceptions import AzureError

        try:
            ledger = checked(lambda: storage.ledger(replace(conf, tenant_id=tenant)))
            name = str(created.get("displayName") or "")
            ledger.record_registration(str(created["id"]), app_id=app_id, display_name=name, by="cli")
            binding["recordedInLedger"] = True
        except (click.ClickException, AzureError) as exc:  # registered all the same: say so, do not fail
            message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc).splitlines()[0]
            out.note(f"warning: the registration was not recorded in the ledger ({message}); vlsync doctor will ask")
    return binding


@provider.command(
    "update",
    epilog=example('vlsync provider update 2b8c… --display-name "Contoso Academy" --course-activity-sync'),
)
@click.argument("registration_id", metavar="ID", callback=valid_id)
@click.option("--display-name", "display_name", help="Name shown in Viva Learning.")
@logo_options(required=False)
@click.option("--login-url", "login_url", help="Sign-in URL of the provider's courses.")
@click.option(
    "--course-activity-sync/--no-course-activity-sync",
    "course_activity_sync",
    default=None,
    help="Allow or stop course-activity sync.",
)
@options(OUTPUT_OPTIONS, GRAPH_OPTIONS)
def update(
    registration_id: str,
    display_name: str | None,
    square_light: str | None,
    long_light: str | None,
    square_dark: str | None,
    long_dark: str | None,
    login_url: str | None,
    course_activity_sync: bool | None,
) -> None:
    """Change a provider's name, logos, login URL or course-activity sync (only the options given)."""
    changes = provider_body(
        display_name=display_name,
        square_light=square_light,
        long_light=long_light,
        square_dark=square_dark,
        long_dark=long_dark,
        login_url=login_url,
        course_activity_sync=course_activity_sync,
    )
    if not changes:
        raise click.UsageError("nothing to change: give at least one of the options")
    if any(isinstance(v, str) and not v.strip() for k, v in changes.items() if k != "loginWebUrl"):
        raise click.UsageError("display name and logo URLs must not be empty")
    conf, out = config(), printer()
    target = write_target(conf, registration_id, storage=False)

    async def go() -> None:
        async with graph("provider", conf, out, target=target) as client:
            await client.update_provider(registration_id, changes)

    run(go())
    if out.as_json:
        out.json({"id": registration_id, "updated": changes, "target": target.view()})
    else:
        out.line(f"updated provider {registration_id}: {', '.join(sorted(changes))}")


# -- get / list / delete -------------------------------------------------------------------------------


@provider.command(
    "get",
    epilog=example("vlsync provider get 2b8c… --select displayName,loginWebUrl", "vlsync --json provider get 2b8c…"),
)
@click.argument("registration_id", metavar="ID", callback=valid_id)
@click.option("--select", help="Comma-separated properties to return ($select).")
@options(OUTPUT_OPTIONS, GRAPH_OPTIONS)
def get(registration_id: str, select: str | None) -> None:
    """Show one learning provider."""
    conf, out = config(), printer()

    async def go() -> dict[str, Any]:
        async with graph("provider", conf, out) as client:
            return await client.get_provider(registration_id, select=comma_list(select))

    item = run(go())
    if out.as_json:
        out.json(item)
    else:
        _show_provider(out, item)


@provider.command("list", epilog=example("vlsync provider list", "vlsync --json provider list"))
@options(OUTPUT_OPTIONS, GRAPH_OPTIONS)
def list_() -> None:
    """List the tenant's learning providers (every page)."""
    conf, out = config(), printer()

    async def go() -> list[dict[str, Any]]:
        async with graph("provider", conf, out) as client:
            return [item async for item in client.list_providers()]

    items = run(go())
    if out.as_json:
        out.json(items)
        return
    out.rows(
        ["id", "displayName", "loginWebUrl", "courseActivitySync"],
        [
            [i.get("id"), i.get("displayName"), i.get("loginWebUrl"), i.get("isCourseActivitySyncEnabled")]
            for i in items
        ],
    )
    out.line(f"{len(items)} provider(s)")


@provider.command(
    "delete",
    epilog=example("vlsync provider delete 2b8c… --yes"),
    help=f"Delete a learning provider (asks first unless --yes). {CONTENT_FATE}",
)
@click.argument("registration_id", metavar="ID", callback=valid_id)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@options(OUTPUT_OPTIONS, GRAPH_OPTIONS)
def delete(registration_id: str, yes: bool) -> None:
    from vlsync import operations

    conf, out = config(), printer()
    target = write_target(conf, registration_id, storage=False)

    async def go() -> None:
        async with graph("provider", conf, out, target=target) as client:
            found = await operations.existing_provider(client, registration_id)  # an unknown id is an error
            if not yes:
                out.note(CONTENT_FATE)
                name = found.get("displayName")
                click.confirm(f"Delete learning provider {name!r} ({registration_id})?", abort=True, err=True)
            await client.delete_provider(registration_id)

    run(go())
    if out.as_json:
        out.json({"id": registration_id, "deleted": True, "content": CONTENT_FATE, "target": target.view()})
    else:
        out.line(f"deleted provider {registration_id}")
        out.line(CONTENT_FATE)


# -- disable / enable ----------------------------------------------------------------------------------


def _activation(conf: CliConfig, out: Printer, ledger: Ledger, target: Target, active: bool) -> BatchResult:
    from vlsync import operations

    registration_id = target.registration

    async def go() -> BatchResult:
        async with graph("content", conf, out, target=target) as client:
            if active:
                return await operations.reactivate_marked(client, ledger, registration_id)
            return await operations.deactivate_all(client, ledger, registration_id)

    outcome = run(go())
    if active:
        out.note(
            f"reactivated {len(outcome.done)} item(s) that `provider disable --deactivate-content` had hidden "
            f"(isActive=true); {len(outcome.unchanged)} already active or gone; {len(outcome.failed)} failed. "
            "Items the LMS retired stay inactive."
        )
    else:
        out.note(
            f"deactivated {len(outcome.done)} item(s) (isActive=false, marked in the ledger); "
            f"{len(outcome.unchanged)} already inactive (left alone, and left inactive by enable); "
            f"{len(outcome.failed)} failed"
        )
    return outcome


def _fail_if(outcome: BatchResult | None, summary: dict[str, Any]) -> None:
    if outcome is not None and outcome.failed:
        raise Failure(
            f"{len(outcome.failed)} item(s) could not be changed",
            {
                "lines": [f"{f['externalId']}: {f['status']} {f['code']}: {f['message']}" for f in outcome.failed],
                **summary,
            },
        )


@provider.command(
    "disable",
    epilog=example(
        "vlsync provider disable 2b8c… --deactivate-content",
        more="Graph has no enabled flag: the function app stops pushing for this registration and keeps "
        "its commands in <queue>-held (nothing parked, nothing lost) until `vlsync provider enable`.",
    ),
)
@click.argument("registration_id", metavar="ID", callback=valid_id)
@click.option(
    "--deactivate-content",
    is_flag=True,
    help="Also set isActive=false on every active item (hidden, not deleted), marked in the ledger so that "
    "enable --reactivate-content shows exactly these again.",
)
@SETTLE_OPTION
@options(OUTPUT_OPTIONS, GRAPH_OPTIONS, STORAGE_OPTIONS)
def disable(registration_id: str, deactivate_content: bool) -> None:
    """Stop the function app pushing content for one registration."""
    from vlsync import operations, storage

    conf, out = config(), printer()
    ledger = checked(lambda: storage.ledger(conf))
    target = write_target(conf, registration_id, storage=True)
    announce(out, target)

    async def go() -> None:
        await operations.set_enabled(ledger, registration_id, False)

    run(go())
    out.line(f"registration {registration_id} disabled: the function app now holds its commands in {conf.held_queue}")
    out.note(f"(workers notice within {conf.state_cache_seconds:g}s, REGISTRATION_STATE_CACHE_SECONDS)")
    outcome = None
    if deactivate_content:
        if conf.state_cache_seconds:
            out.note(f"waiting {conf.state_cache_seconds:g}s until no worker pushes for it any more")
            run(asyncio.sleep(conf.state_cache_seconds))
        outcome = _activation(conf, out, ledger, target, False)
    summary = {
        "registrationId": registration_id,
        "enabled": False,
        "heldQueue": conf.held_queue,
        "deactivated": None if outcome is None else len(outcome.done),
        "target": target.view(),
    }
    _fail_if(outcome, summary)
    if outcome is not None:
        out.line(f"deactivated {len(outcome.done)} item(s) of {registration_id} (isActive=false)")
    if out.as_json:
        out.json(summary)


@provider.command(
    "enable",
    epilog=example(
        "vlsync provider enable 2b8c… --reactivate-content",
        more="Moves this registration's held commands back to the work queue and reports how many; "
        "other registrations' held commands stay where they are.",
    ),
)
@click.argument("registration_id", metavar="ID", callback=valid_id)
@click.option(
    "--reactivate-content",
    is_flag=True,
    help="Also set isActive=true again on the items disable --deactivate-content hid (as the ledger records "
    "them); items the LMS retired stay inactive.",
)
@SETTLE_OPTION
@options(OUTPUT_OPTIONS, GRAPH_OPTIONS, STORAGE_OPTIONS)
def enable(registration_id: str, reactivate_content: bool) -> None:
    """Let the function app push content for a registration again, and release its held commands."""
    from vlsync import operations, storage

    conf, out = config(), printer()
    ledger = checked(lambda: storage.ledger(conf))
    queue = checked(lambda: storage.command_queue(conf))
    target = write_target(conf, registration_id, storage=True)
    announce(out, target)
    # Before the release: the held LMS commands, pushed after it, then have the last word.
    outcome = _activation(conf, out, ledger, target, True) if reactivate_content else None

    async def go() -> int:
        await operations.set_enabled(ledger, registration_id, True)
        moved = await operations.release_held(queue, registration_id)
        if conf.state_cache_seconds:
            # A worker that still trusts its cached "disabled" may hold a command again meanwhile.
            out.note(f"released {moved}; releasing again in {conf.state_cache_seconds:g}s (worker state cache)")
            await asyncio.sleep(conf.state_cache_seconds)
            moved += await operations.release_held(queue, registration_id)
        return moved

    released = run(go())
    summary = {
        "registrationId": registration_id,
        "enabled": True,
        "released": released,
        "reactivated": None if outcome is None else len(outcome.done),
        "target": target.view(),
    }
    _fail_if(outcome, summary)
    out.line(f"registration {registration_id} enabled: released {released} held command(s) to {conf.queue}")
    if outcome is not None:
        out.line(f"reactivated {len(outcome.done)} item(s) of {registration_id} (isActive=true)")
    if out.as_json:
        out.json(summary)
