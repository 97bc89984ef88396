"""``governance keygen`` and ``governance actors``: signing keys, and the registry of who may
send commands (written through the operator's own database access, the trust root)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import click
import psycopg

from governance.codec import timestamp_to_wire
from governance.model import ActorType
from governance.trust import Role
from governance_cli.errors import ServiceUnavailable, Unsatisfiable
from governance_cli.options import database_url_option
from producer.outcomes import EXIT_USAGE

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

# The registry checks these again; here they shape the help and the usage errors.
ACTOR_TYPES = [member.value for member in ActorType]
ROLES = [member.value for member in Role]


def _usage_error(message: str) -> NoReturn:
    """Invalid input: the contract's usage exit code, with the reason."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(EXIT_USAGE)


@contextlib.contextmanager
def registry_connection(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the registry's database (its URL checked by the option); its errors
    become one-line messages: invalid input exit 2, a policy the registry cannot satisfy
    exit 8, an unreachable database exit 7 (see governance_cli.errors), any other exit 1."""
    from worker.policy_store import PolicyStoreError, PolicyUnsatisfiable
    from worker.registry import RegistryError, RegistryInputError

    try:
        with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
            yield conn
    except RegistryInputError as exc:
        _usage_error(str(exc))
    except PolicyUnsatisfiable as exc:
        raise Unsatisfiable(str(exc)) from exc
    except (RegistryError, PolicyStoreError) as exc:
        raise click.ClickException(str(exc)) from exc
    except psycopg.errors.UndefinedTable as exc:
        raise ServiceUnavailable(
            "the database has no registry yet: run `governance migrate` first"
        ) from exc
    except psycopg.errors.InsufficientPrivilege as exc:
        raise click.ClickException(
            f"this database role may not change the registry: {exc.diag.message_primary}"
        ) from exc


def _checked(
    conn: psycopg.Connection[Any],
    force: bool,
    change: Callable[[], T],
    *,
    actor_id: str | None = None,
    key_id: str | None = None,
) -> T:
    """``change`` made unless it would leave the active approval policy unsatisfiable (exit
    8 naming the rule, the submitter and the shortfall), or made anyway with ``force``, with
    a warning on stderr saying what it broke."""
    from worker.policy_store import change_registry

    done = change_registry(conn, change, force=force, actor_id=actor_id, key_id=key_id)
    if done.forced_past:
        reasons = "; ".join(str(shortfall) for shortfall in done.forced_past)
        click.echo(
            f"warning: forced: approval policy version {done.version} is now unsatisfiable: "
            f"{reasons}",
            err=True,
        )
    return done.result


def _flags(values: tuple[str, ...]) -> str:
    return ",".join(values) if values else "-"


def _key_state(key: Any) -> str:
    return f"revoked {timestamp_to_wire(key.revoked_at)}" if key.revoked else "active"


#: The COSE algorithms of passkeys, by number (governance.passkeys.ALGORITHMS, spelled out:
#: the CLI loads no WebAuthn code to start).
_PASSKEY_ALGORITHMS = {-7: "ES256", -8: "EdDSA"}


def _shown_key(key: Any) -> str:
    """An Ed25519 key as itself; a passkey (a long COSE key) by what it is."""
    if key.scheme == "ed25519":
        return str(key.public_key)
    return f"passkey, {_PASSKEY_ALGORITHMS.get(key.algorithm, key.algorithm)}"


def _echo_actor(actor: Any) -> None:
    from governance_cli.client_format import table

    click.echo(f"actor:   {actor.actor_id}")
    click.echo(f"name:    {actor.name or '-'}")
    click.echo(f"type:    {actor.type}")
    click.echo(f"roles:   {_flags(actor.roles)}")
    click.echo(f"groups:  {_flags(actor.groups)}")
    click.echo(f"active:  {'yes' if actor.active else 'no'}")
    if not actor.keys:
        click.echo("keys:    none (the actor cannot sign commands)")
        return
    click.echo("keys:")
    rows = [
        (key.key_id, _shown_key(key), timestamp_to_wire(key.created_at), _key_state(key))
        for key in actor.keys
    ]
    for line in table(["key_id", "public_key", "created_at", "state"], rows).splitlines():
        click.echo(f"  {line}")


json_option: Callable[[F], F] = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON instead of text."
)
force_option: Callable[[F], F] = click.option(
    "--force",
    is_flag=True,
    help="Make the change even if it leaves the active approval policy unsatisfiable "
    "(otherwise refused, exit 8).",
)
key_id_option: Callable[[F], F] = click.option(
    "--key-id",
    default=None,
    help="The key's id [default: the first 16 characters of the base64url sha256 of the "
    "public key].",
)


@click.command()
@click.option("--actor", "actor_id", required=True, help="The actor the key signs for.")
@click.option(
    "--out",
    "path",
    required=True,
    type=click.Path(dir_okay=False, writable=True),
    help="The key file to create (mode 0600; an existing file is never overwritten).",
)
@key_id_option
@click.option("--json", "as_json", is_flag=True, help="Print the new key as JSON.")
def keygen(actor_id: str, path: str, key_id: str | None, as_json: bool) -> None:
    """Create a signing key for an actor and write it to a key file.

    Prints the public key (base64url) on stdout, for an operator to register with
    `governance actors add` or `governance actors key add`; the key id goes to stderr.
    Give the key file to the client as --signing-key FILE or GOVERNANCE_SIGNING_KEY.
    """
    from producer.keys import KeyFileError, generate, write_key_file

    try:
        key = generate(actor_id, key_id)
    except ValueError as exc:
        _usage_error(str(exc))
    try:
        write_key_file(key, path)
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        document = {
            "actor_id": key.actor_id,
            "key_id": key.key_id,
            "public_key": key.public_key_b64,
            "file": path,
        }
        click.echo(json.dumps(document, ensure_ascii=False))
        return
    click.echo(key.public_key_b64)
    click.echo(f"key id {key.key_id} of actor {key.actor_id}, written to {path}", err=True)


@click.group()
def actors() -> None:
    """The registry of actors: their roles, groups and public keys.

    Written with this command's own database access (the workers' database role can only
    read it); every change is recorded in registry_audit. Keys are never deleted, only
    revoked, so what they signed stays verifiable.
    """


@actors.command("add")
@database_url_option
@click.argument("actor_id")
@click.option("--name", default=None, help="The actor's display name (shown in events).")
@click.option(
    "--type",
    "type_",
    type=click.Choice(ACTOR_TYPES),
    default=ActorType.USER.value,
    show_default=True,
    help="The actor's type (shown in events).",
)
@click.option(
    "--role", "roles", multiple=True, type=click.Choice(ROLES), help="A role (repeatable)."
)
@click.option("--group", "groups", multiple=True, help="An approver group (repeatable).")
@click.option("--public-key", default=None, help="Its first Ed25519 public key (base64url).")
@key_id_option
@force_option
def add(
    database_url: str,
    actor_id: str,
    name: str | None,
    type_: str,
    roles: tuple[str, ...],
    groups: tuple[str, ...],
    public_key: str | None,
    key_id: str | None,
    force: bool,
) -> None:
    """Register an actor, with its first public key.

    Refused (exit 8) when the new actor would leave the active approval policy
    unsatisfiable (a requester who is its groups' only approver), unless --force."""
    from worker import registry

    with registry_connection(database_url) as conn:
        actor = _checked(
            conn,
            force,
            lambda: registry.add_actor(
                conn, actor_id, name, type_, roles, groups, public_key=public_key, key_id=key_id
            ),
            actor_id=actor_id,
        )
    keys = ", ".join(key.key_id for key in actor.keys) or "none"
    click.echo(
        f"added actor {actor.actor_id} ({actor.type}; roles {_flags(actor.roles)}; "
        f"groups {_flags(actor.groups)}; keys {keys})"
    )


@actors.command("list")
@database_url_option
@json_option
def list_(database_url: str, as_json: bool) -> None:
    """List the registered actors (with --json, one JSON object per line)."""
    from governance_cli.client_format import table
    from worker import registry

    with registry_connection(database_url) as conn:
        found = registry.list_actors(conn)
    if as_json:
        for actor in found:
            click.echo(json.dumps(actor.to_dict(), ensure_ascii=False))
        return
    rows = [
        (
            actor.actor_id,
            actor.name or "-",
            actor.type,
            _flags(actor.roles),
            _flags(actor.groups),
            "yes" if actor.active else "no",
            f"{sum(not key.revoked for key in actor.keys)}/{len(actor.keys)}",
        )
        for actor in found
    ]
    headers = ["actor_id", "name", "type", "roles", "groups", "active", "keys"]
    click.echo(table(headers, rows))
    click.echo(f"{len(found)} actor(s)", err=True)


@actors.command()
@database_url_option
@click.argument("actor_id")
@json_option
def show(database_url: str, actor_id: str, as_json: bool) -> None:
    """Show one actor with all its keys, revoked ones included."""
    from worker import registry

    with registry_connection(database_url) as conn:
        actor = registry.show_actor(conn, actor_id)
    if as_json:
        click.echo(json.dumps(actor.to_dict(), indent=2, ensure_ascii=False))
    else:
        _echo_actor(actor)


@actors.command()
@database_url_option
@click.argument("actor_id")
@click.option(
    "--origin",
    # governance.passkeys.DEFAULT_ORIGIN, spelled out: the CLI loads no WebAuthn code to start.
    default="http://localhost:8080",
    envvar="GOVERNANCE_CONSOLE_ORIGIN",
    show_default=True,
    help="The console's public origin, where the link leads [env GOVERNANCE_CONSOLE_ORIGIN].",
)
def enroll(database_url: str, actor_id: str, origin: str) -> None:
    """Print a one-time link that enrolls a passkey for ACTOR_ID in the console (valid 15
    minutes, used once). Give it to that person only: whoever opens it first enrolls."""
    from worker import enrollment

    with registry_connection(database_url) as conn:
        link = enrollment.issue_link(conn, actor_id)
    click.echo(f"{origin.rstrip('/')}/enroll/{link.token}")
    click.echo(
        f"one-time link for {link.actor_id}, valid until {timestamp_to_wire(link.expires_at)}",
        err=True,
    )


@actors.command()
@database_url_option
@click.argument("actor_id")
@force_option
def deactivate(database_url: str, actor_id: str, force: bool) -> None:
    """Deactivate an actor: its commands are refused, whichever key signs them.

    Refused (exit 8) when it would leave the active approval policy unsatisfiable (too few
    approvers left for a rule), unless --force."""
    from worker import registry

    with registry_connection(database_url) as conn:
        _checked(conn, force, lambda: registry.set_active(conn, actor_id, False), actor_id=actor_id)
    click.echo(f"deactivated actor {actor_id}")


@actors.command()
@database_url_option
@click.argument("actor_id")
@force_option
def activate(database_url: str, actor_id: str, force: bool) -> None:
    """Activate an actor again.

    Refused (exit 8) when it would leave the active approval policy unsatisfiable (a
    requester who is its groups' only approver), unless --force."""
    from worker import registry

    with registry_connection(database_url) as conn:
        _checked(conn, force, lambda: registry.set_active(conn, actor_id, True), actor_id=actor_id)
    click.echo(f"activated actor {actor_id}")


@actors.group()
def role() -> None:
    """An actor's roles: add one, remove one (requester, approver, operator, administrator).

    A change that would leave the active approval policy unsatisfiable is refused (exit 8)
    unless --force."""


@role.command("add")
@database_url_option
@click.argument("actor_id")
@click.argument("role_name", metavar="ROLE", type=click.Choice(ROLES))
@force_option
def role_add(database_url: str, actor_id: str, role_name: str, force: bool) -> None:
    """Give ACTOR one more ROLE."""
    from worker import registry

    with registry_connection(database_url) as conn:
        actor = _checked(
            conn, force, lambda: registry.add_role(conn, actor_id, role_name), actor_id=actor_id
        )
    click.echo(f"actor {actor_id} has role {role_name} (roles {_flags(actor.roles)})")


@role.command("remove")
@database_url_option
@click.argument("actor_id")
@click.argument("role_name", metavar="ROLE", type=click.Choice(ROLES))
@force_option
def role_remove(database_url: str, actor_id: str, role_name: str, force: bool) -> None:
    """Take ROLE from ACTOR."""
    from worker import registry

    with registry_connection(database_url) as conn:
        actor = _checked(
            conn, force, lambda: registry.remove_role(conn, actor_id, role_name), actor_id=actor_id
        )
    click.echo(f"actor {actor_id} no longer has role {role_name} (roles {_flags(actor.roles)})")


@actors.group()
def group() -> None:
    """An actor's groups (who may decide a group's approvals): add one, remove one.

    A change that would leave the active approval policy unsatisfiable is refused (exit 8)
    unless --force."""


@group.command("add")
@database_url_option
@click.argument("actor_id")
@click.argument("group_name", metavar="GROUP")
@force_option
def group_add(database_url: str, actor_id: str, group_name: str, force: bool) -> None:
    """Make ACTOR a member of GROUP."""
    from worker import registry

    with registry_connection(database_url) as conn:
        actor = _checked(
            conn, force, lambda: registry.add_group(conn, actor_id, group_name), actor_id=actor_id
        )
    click.echo(f"actor {actor_id} is in group {group_name} (groups {_flags(actor.groups)})")


@group.command("remove")
@database_url_option
@click.argument("actor_id")
@click.argument("group_name", metavar="GROUP")
@force_option
def group_remove(database_url: str, actor_id: str, group_name: str, force: bool) -> None:
    """Take ACTOR out of GROUP."""
    from worker import registry

    with registry_connection(database_url) as conn:
        actor = _checked(
            conn,
            force,
            lambda: registry.remove_group(conn, actor_id, group_name),
            actor_id=actor_id,
        )
    click.echo(
        f"actor {actor_id} is no longer in group {group_name} (groups {_flags(actor.groups)})"
    )


@actors.group()
def key() -> None:
    """An actor's public keys: add one (rotation), revoke one."""


@key.command("add")
@database_url_option
@click.argument("actor_id")
@click.option("--public-key", required=True, help="The Ed25519 public key (base64url).")
@key_id_option
def key_add(database_url: str, actor_id: str, public_key: str, key_id: str | None) -> None:
    """Register another public key for an actor; its other keys stay valid until revoked."""
    from worker import registry

    with registry_connection(database_url) as conn:
        added = registry.add_key(conn, actor_id, public_key, key_id)
    click.echo(f"added key {added.key_id} to actor {added.actor_id}")


@key.command("revoke")
@database_url_option
@click.argument("key_id")
@force_option
def key_revoke(database_url: str, key_id: str, force: bool) -> None:
    """Revoke a key for good: commands signed with it are refused from the next one on.

    Refused (exit 8) when revoking an approver's last key would leave the active approval
    policy unsatisfiable, unless --force."""
    from worker import registry

    with registry_connection(database_url) as conn:
        revoked = _checked(conn, force, lambda: registry.revoke_key(conn, key_id), key_id=key_id)
    click.echo(
        f"revoked key {revoked.key_id} of actor {revoked.actor_id} "
        f"at {timestamp_to_wire(revoked.revoked_at)}"
    )


@actors.command("worker-key")
@database_url_option
@click.argument("path", type=click.Path(dir_okay=False))
@click.option(
    "--actor",
    "actor_id",
    default="worker",
    show_default=True,
    help="The workers' actor (registered with the worker role when it is new).",
)
def worker_key(database_url: str, path: str, actor_id: str) -> None:
    """Make PATH a registered worker key, for GOVERNANCE_WORKER_KEY: create the key file when
    there is none (mode 0600), register its actor with the worker role (type service) when
    it is new, and its public key when the actor does not have it yet.

    Idempotent, for a deployment's provisioning step (docker compose runs it before the
    workers start). By hand, the same is `governance keygen --actor worker-1 --out FILE`
    then `governance actors add worker-1 --type service --role worker --public-key KEY`.
    An existing actor without the worker role is refused: give it the role yourself."""
    from producer.keys import KeyFileError, generate, load_key_file, write_key_file
    from worker import registry

    try:
        if os.path.exists(path):
            key = load_key_file(path)
            made = False
        else:
            key = generate(actor_id)
            write_key_file(key, path)
            made = True
    except (KeyFileError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if key.actor_id != actor_id:
        _usage_error(f"{path} holds a key of actor {key.actor_id!r}, not of {actor_id!r}")
    with registry_connection(database_url) as conn:
        try:
            actor: registry.RegisteredActor | None = registry.show_actor(conn, actor_id)
        except registry.RegistryError:
            actor = None
        if actor is None:
            registry.add_actor(
                conn,
                actor_id,
                "Worker",
                ActorType.SERVICE.value,
                [Role.WORKER.value],
                [],
                public_key=key.public_key_b64,
                key_id=key.key_id,
            )
            done = f"registered actor {actor_id} (worker) with key {key.key_id}"
        elif Role.WORKER.value not in actor.roles:
            raise click.ClickException(
                f"actor {actor_id} exists without the worker role; "
                f"`governance actors role add {actor_id} worker` first, if it is a worker"
            )
        elif not any(k.key_id == key.key_id for k in actor.keys):
            registry.add_key(conn, actor_id, key.public_key_b64, key.key_id)
            done = f"added key {key.key_id} to worker {actor_id}"
        else:
            done = f"worker {actor_id} already has key {key.key_id}"
    click.echo(f"{done}; key file {path}{' (new)' if made else ''}")


COMMANDS = (keygen, actors)
