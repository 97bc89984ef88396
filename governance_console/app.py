"""The console's web application (Starlette): enrollment, sign-in, the inbox, the request
page, relaying signed commands, and their outcomes as server-sent events."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import psycopg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.decode_credential_public_key import decode_credential_public_key
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from governance.commands import InvalidCommand, parse_command
from governance.passkeys import DEFAULT_ORIGIN, relying_party_of
from governance_console import pages
from governance_console.sessions import Session, Sessions

log = logging.getLogger("governance.console")

COOKIE = "governance_session"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

#: A hook that changes a command between the browser and the broker: a console that tries
#: to forge (for the tests that show it cannot).
Alteration = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class ConsoleSettings:
    """Where the console reads, relays, and is reached."""

    database_url: str
    broker_url: str
    origin: str = DEFAULT_ORIGIN
    audience: str = "governance"
    #: The origins the deployment's workers accept passkey proofs from, for the request
    #: page's verification (as ``governance verify`` would judge it); default: this origin.
    webauthn_origins: frozenset[str] | None = None
    alter_before_relay: Alteration | None = None

    @property
    def deployment(self) -> Any:
        """How the request page verifies a history: signed, this audience and origins."""
        from governance.authentication import DEFAULT_MAX_AGE, Policy
        from governance.replay import Deployment

        origins = self.webauthn_origins or frozenset({self.origin.rstrip("/")})
        return Deployment(commands=Policy(self.audience, DEFAULT_MAX_AGE, origins))

    @property
    def rp_id(self) -> str:
        """The WebAuthn relying-party id: the origin's host."""
        host = relying_party_of(self.origin)
        if host is None:
            raise ValueError(f"GOVERNANCE_CONSOLE_ORIGIN {self.origin!r} has no host")
        return host

    @property
    def secure_cookie(self) -> bool:
        """Cookies are ``Secure`` except on localhost (browsers serve it without TLS)."""
        return urlsplit(self.origin).hostname not in LOCAL_HOSTS


#: What the inbox watches: the outcomes of every request.
EVERY_REQUEST = "*"


@dataclass
class Outcomes:
    """Outcome events of ``governance.events``, handed to the pages that watch a request.

    One subscription for the console (in a thread of its own: kombu blocks), fanned out to
    the event streams of the open pages.
    """

    broker_url: str
    database_url: str
    _watchers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    ready: threading.Event = field(default_factory=threading.Event)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="console-outcomes", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # A lost broker connection is an infrastructure fault: logged, and the subscription
        # made again after a pause, for as long as the console runs.
        while not self._stop.is_set():
            try:
                self._follow()
            except Exception:
                log.exception("the outcome subscription failed; subscribing again in 2 s")
                self._stop.wait(2)

    def _follow(self) -> None:
        from producer.event_proof import EventVerifier
        from producer.subscriptions import Subscription

        subscription = Subscription(
            self.broker_url, verifier=EventVerifier.from_environment(self.database_url)
        )
        self.ready.set()
        try:
            while not self._stop.is_set():
                event = subscription.get(timeout=0.5)
                if event is not None and self._loop is not None:
                    self._loop.call_soon_threadsafe(self._deliver, event)
        finally:
            subscription.close()

    def _deliver(self, event: dict[str, Any]) -> None:
        watching = self._watchers.get(str(event.get("request_id")), set())
        for queue in [*watching, *self._watchers.get(EVERY_REQUEST, ())]:
            queue.put_nowait(event)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @contextlib.contextmanager
    def watch(self, request_id: str) -> Any:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._watchers.setdefault(request_id, set()).add(queue)
        try:
            yield queue
        finally:
            self._watchers[request_id].discard(queue)


def create_app(settings: ConsoleSettings) -> Starlette:
    """The console application for ``settings``."""
    from producer.client import GovernanceClient
    from producer.queries import Queries

    sessions = Sessions()
    queries = Queries(settings.database_url)
    outcomes = Outcomes(settings.broker_url, settings.database_url)
    client_holder: list[GovernanceClient] = []
    client_lock = threading.Lock()

    def client() -> GovernanceClient:
        # Made on the first relay (from a worker thread), once.
        with client_lock:
            if not client_holder:
                client_holder.append(
                    GovernanceClient(
                        settings.broker_url, settings.database_url, audience=settings.audience
                    )
                )
            return client_holder[0]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        outcomes.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            outcomes.stop()
            for held in client_holder:
                held.close()

    def session_of(request: Request) -> Session | None:
        return sessions.get(request.cookies.get(COOKIE))

    def same_origin(request: Request) -> bool:
        # A state-changing request must come from the console's own pages.
        return request.headers.get("origin") == settings.origin.rstrip("/")

    def csrf_ok(request: Request, session: Session) -> bool:
        return same_origin(request) and request.headers.get("x-csrf-token") == session.csrf

    def refuse(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    # ------------------------------------------------------------ enrollment

    async def enroll_page(request: Request) -> Response:
        from worker import enrollment

        token = request.path_params["token"]
        try:
            pending = await asyncio.to_thread(_pending_enrollment, settings.database_url, token)
        except enrollment.EnrollmentError as exc:
            return HTMLResponse(pages.message("Enrollment", str(exc)), status_code=410)
        return HTMLResponse(pages.enroll(pending.actor_id, pending.name))

    async def enroll_options(request: Request) -> Response:
        from worker import enrollment

        if not same_origin(request):
            return refuse(403, "cross-origin request refused")
        token = request.path_params["token"]
        try:
            pending = await asyncio.to_thread(_pending_enrollment, settings.database_url, token)
        except enrollment.EnrollmentError as exc:
            return refuse(410, str(exc))
        options = generate_registration_options(
            rp_id=settings.rp_id,
            rp_name="Governance",
            user_name=pending.actor_id,
            user_id=pending.actor_id.encode("utf-8"),
            user_display_name=pending.name or pending.actor_id,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED,
                user_verification=UserVerificationRequirement.REQUIRED,
            ),
            supported_pub_key_algs=[
                COSEAlgorithmIdentifier.ECDSA_SHA_256,
                COSEAlgorithmIdentifier.EDDSA,
            ],
        )
        handle = sessions.challenge(options.challenge, "enroll:" + enrollment.token_hash(token))
        return JSONResponse({"handle": handle, "options": json.loads(options_to_json(options))})

    async def enroll_finish(request: Request) -> Response:
        from worker import enrollment, registry

        if not same_origin(request):
            return refuse(403, "cross-origin request refused")
        token = request.path_params["token"]
        body = await request.json()
        challenge = sessions.take_challenge(
            str(body.get("handle")), "enroll:" + enrollment.token_hash(token)
        )
        if challenge is None:
            return refuse(400, "the enrollment ceremony expired; reload the page")
        try:
            verified = verify_registration_response(
                credential=body.get("credential"),
                expected_challenge=challenge,
                expected_rp_id=settings.rp_id,
                expected_origin=settings.origin.rstrip("/"),
                require_user_verification=True,
                supported_pub_key_algs=[
                    COSEAlgorithmIdentifier.ECDSA_SHA_256,
                    COSEAlgorithmIdentifier.EDDSA,
                ],
            )
        except Exception as exc:  # the library's refusals: say why, enroll nothing
            return refuse(400, f"the passkey was not accepted: {exc}")
        algorithm = int(decode_credential_public_key(verified.credential_public_key).alg)
        try:
            key = await asyncio.to_thread(
                _enroll,
                settings.database_url,
                token,
                bytes_to_base64url(verified.credential_id),
                bytes_to_base64url(verified.credential_public_key),
                algorithm,
            )
        except registry.RegistryError as exc:
            return refuse(409, str(exc))
        log.info("enrolled passkey %s of %s", key.key_id, key.actor_id)
        return JSONResponse({"actor_id": key.actor_id, "key_id": key.key_id})

    # ------------------------------------------------------------ sign-in

    async def signin_page(request: Request) -> Response:
        return HTMLResponse(pages.signin())

    async def signin_options(request: Request) -> Response:
        if not same_origin(request):
            return refuse(403, "cross-origin request refused")
        options = generate_authentication_options(
            rp_id=settings.rp_id, user_verification=UserVerificationRequirement.REQUIRED
        )
        handle = sessions.challenge(options.challenge, "signin")
        return JSONResponse({"handle": handle, "options": json.loads(options_to_json(options))})

    async def signin_finish(request: Request) -> Response:
        if not same_origin(request):
            return refuse(403, "cross-origin request refused")
        body = await request.json()
        challenge = sessions.take_challenge(str(body.get("handle")), "signin")
        credential = body.get("credential")
        if challenge is None or not isinstance(credential, dict):
            return refuse(400, "the sign-in ceremony expired; try again")
        key_id = str(credential.get("id"))
        row = await asyncio.to_thread(_passkey, settings.database_url, key_id)
        if row is None:
            return refuse(403, "this passkey is not a registered key of an active actor")
        try:
            verify_authentication_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=settings.rp_id,
                expected_origin=settings.origin.rstrip("/"),
                credential_public_key=base64url_to_bytes(row[1]),
                credential_current_sign_count=0,
                require_user_verification=True,
            )
        except Exception as exc:  # the library's refusals
            return refuse(403, f"sign-in refused: {exc}")
        token, session = sessions.open(row[0], key_id)
        response = JSONResponse({"actor_id": session.actor_id})
        response.set_cookie(
            COOKIE,
            token,
            httponly=True,
            secure=settings.secure_cookie,
            samesite="strict",
            path="/",
        )
        return response

    async def signout(request: Request) -> Response:
        session = session_of(request)
        if session is None or not csrf_ok(request, session):
            return refuse(403, "refused")
        sessions.close(request.cookies.get(COOKIE))
        response = JSONResponse({})
        response.delete_cookie(COOKIE, path="/")
        return response

    # ------------------------------------------------------------ reading

    async def inbox(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return RedirectResponse("/signin", status_code=303)
        decidable = await asyncio.to_thread(queries.pending_for, session.actor_id)
        now = datetime.now(UTC)
        return HTMLResponse(pages.inbox(session, decidable, now))

    async def request_page(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return RedirectResponse("/signin", status_code=303)
        request_id = request.path_params["request_id"]
        view = await asyncio.to_thread(queries.request, request_id)
        if view is None:
            return HTMLResponse(
                pages.message("Not found", f"no request {request_id}"), status_code=404
            )
        decidable = await asyncio.to_thread(queries.pending_for, session.actor_id)
        may_decide = next(
            (d.approval_ids for d in decidable if d.request.request_id == request_id), ()
        )
        verified = await asyncio.to_thread(
            _verify, settings.database_url, request_id, settings.deployment
        )
        return HTMLResponse(
            pages.request_page(session, view, may_decide, verified, settings.audience)
        )

    # ------------------------------------------------------------ relaying

    async def relay(request: Request) -> Response:
        session = session_of(request)
        if session is None or not csrf_ok(request, session):
            return refuse(403, "refused: sign in again")
        command = await request.json()
        if not isinstance(command, dict):
            return refuse(400, "a command is a JSON object")
        actor = command.get("actor")
        if not isinstance(actor, dict) or actor.get("id") != session.actor_id:
            return refuse(403, "the console relays only the signed-in actor's commands")
        auth = command.get("auth")
        if not isinstance(auth, dict) or auth.get("scheme") != "webauthn":
            return refuse(400, "the console relays only passkey-signed commands")
        try:
            parse_command(command)
        except InvalidCommand as exc:
            return refuse(400, str(exc))
        if settings.alter_before_relay is not None:
            command = settings.alter_before_relay(command)
        command_id = await asyncio.to_thread(client().send, command)
        log.info("relayed command %s of %s", command_id, session.actor_id)
        return JSONResponse({"command_id": command_id})

    async def events(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return refuse(403, "sign in first")
        request_id = request.path_params.get("request_id", EVERY_REQUEST)
        # Watching before the response starts: once the page sees the stream open, no
        # outcome of this request can pass unseen (the page relays only then).
        watching = outcomes.watch(request_id)
        queue = watching.__enter__()

        async def stream() -> AsyncIterator[bytes]:
            try:
                yield b": watching\n\n"
                while True:
                    try:
                        event = await asyncio.wait_for(queue.get(), timeout=15)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    yield f"data: {json.dumps(_shown_event(event))}\n\n".encode()
            finally:
                watching.__exit__(None, None, None)

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return Response(status_code=404)
        body = resources.files("governance_console").joinpath("static", name).read_bytes()
        return Response(body, media_type=STATIC[name])

    routes = [
        Route("/", inbox),
        Route("/signin", signin_page),
        Route("/signin/options", signin_options, methods=["POST"]),
        Route("/signin/finish", signin_finish, methods=["POST"]),
        Route("/signout", signout, methods=["POST"]),
        Route("/enroll/{token}", enroll_page),
        Route("/enroll/{token}/options", enroll_options, methods=["POST"]),
        Route("/enroll/{token}/finish", enroll_finish, methods=["POST"]),
        Route("/requests/{request_id}", request_page),
        Route("/requests/{request_id}/events", events),
        Route("/events", events),
        Route("/relay", relay, methods=["POST"]),
        Route("/static/{name}", static),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)

    app.add_middleware(SecurityHeaders)
    app.state.outcomes = outcomes
    return app


class SecurityHeaders:
    """Every response gets the console's Content Security Policy (no inline script, nothing
    from elsewhere) and the usual defences."""

    HEADERS = (
        (b"content-security-policy", CSP.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"cache-control", b"no-store"),
        (b"x-frame-options", b"DENY"),
    )

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *self.HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


STATIC = {"console.js": "text/javascript", "console.css": "text/css"}


def _pending_enrollment(database_url: str, token: str) -> Any:
    from worker import enrollment

    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        return enrollment.pending_enrollment(conn, token)


def _enroll(database_url: str, token: str, credential_id: str, cose_key: str, alg: int) -> Any:
    from worker import enrollment

    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        return enrollment.enroll_passkey(conn, token, credential_id, cose_key, alg)


def _passkey(database_url: str, key_id: str) -> tuple[str, str] | None:
    """The actor and COSE key of passkey ``key_id``: registered, not revoked, its actor
    active (None otherwise)."""
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT k.actor_id, k.public_key FROM actor_keys AS k"
            " JOIN actors AS a USING (actor_id)"
            " WHERE k.key_id = %s AND k.scheme = 'webauthn' AND k.revoked_at IS NULL"
            " AND a.active",
            (key_id,),
        ).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


def _verify(database_url: str, request_id: str, deployment: Any) -> tuple[bool, list[str]]:
    """``governance verify`` of the request: whether it holds, and what it found."""
    from producer import audit

    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        findings = audit.verify_request(conn, request_id, deployment=deployment)
    if findings is None:
        return False, ["no such request"]
    return findings.ok, findings.lines()


def _shown_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """What a page needs of an outcome event."""
    rejection = event.get("rejection") or {}
    request = event.get("request") or {}
    return {
        "command_id": event.get("command_id"),
        "request_id": event.get("request_id"),
        "event_type": event.get("event_type"),
        "to_status": event.get("to_status") or request.get("status"),
        "revision": event.get("revision") or request.get("revision"),
        "code": rejection.get("code"),
        "message": rejection.get("message"),
        "digest": hashlib.sha256(json.dumps(event, sort_keys=True).encode()).hexdigest()[:12],
    }
