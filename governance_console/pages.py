"""The console's pages, rendered on the server. Every value shown is escaped; no page
carries inline script (the Content Security Policy forbids it): behaviour is in
``static/console.js``, which reads what it needs from ``data-`` attributes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from html import escape
from typing import Any

from governance.codec import request_to_dict


def _page(title: str, body: str, *, csrf: str = "", actor: str = "") -> str:
    signed_in = (
        f'<p class="who">Signed in as <strong>{escape(actor)}</strong> '
        '<button type="button" id="signout">Sign out</button></p>'
        if actor
        else ""
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="csrf-token" content="{escape(csrf)}">'
        f"<title>{escape(title)} · Governance</title>"
        '<link rel="stylesheet" href="/static/console.css">'
        '<script src="/static/console.js" defer></script></head><body>'
        f'<header><a href="/">Governance console</a>{signed_in}</header>'
        f'<main id="main"><h1>{escape(title)}</h1>{body}</main></body></html>'
    )


def message(title: str, text: str) -> str:
    """A page that only says something."""
    return _page(title, f'<p role="alert">{escape(text)}</p>')


def enroll(actor_id: str, name: str | None) -> str:
    """The page of a one-time enrollment link."""
    who = escape(name or actor_id)
    return _page(
        "Enroll a passkey",
        f"<p>This link registers a passkey for <strong>{who}</strong> "
        f"(<code>{escape(actor_id)}</code>). It can be used once.</p>"
        '<button type="button" id="enroll">Create passkey</button>'
        '<p id="status" role="status" aria-live="polite"></p>',
    )


def signin() -> str:
    """The sign-in page."""
    return _page(
        "Sign in",
        "<p>Sign in with the passkey you enrolled.</p>"
        '<button type="button" id="signin">Sign in with passkey</button>'
        '<p id="status" role="status" aria-live="polite"></p>',
    )


def _age(created: datetime, now: datetime) -> str:
    seconds = max(0, int((now - created).total_seconds()))
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def _grants(request: Any) -> str:
    parts = []
    for requirement in request.approval_requirements:
        who = requirement.approver_id or f"group {requirement.approver_group}"
        grants = len(requirement.grants)
        parts.append(
            f"{escape(requirement.approval_id)}: {escape(str(who))}, step "
            f"{requirement.step_order}, {escape(requirement.status.value)}"
            + (f" ({grants}/{requirement.min_approvals})" if requirement.approver_group else "")
        )
    return "<br>".join(parts)


def inbox(session: Any, decidable: Sequence[Any], now: datetime) -> str:
    """What the signed-in actor may decide now."""
    if not decidable:
        body = '<p id="empty">Nothing waits for your decision.</p>'
    else:
        rows = []
        for item in decidable:
            request = item.request
            intent = request.intent
            blast = intent.blast_radius
            rows.append(
                "<tr>"
                f'<td><a href="/requests/{escape(request.request_id)}">'
                f"{escape(request.request_id)}</a></td>"
                f"<td>{escape(intent.operation_name)}"
                f"{'<br>' + escape(intent.description) if intent.description else ''}</td>"
                f"<td>{escape(intent.risk_level.value)}</td>"
                f"<td>{escape(blast.scope.value)}, {blast.estimated_affected_count}</td>"
                f"<td>{escape(request.context.actor.id)}</td>"
                f"<td>{_age(request.created_at, now)}</td>"
                f"<td>{_grants(request)}</td>"
                "</tr>"
            )
        body = (
            '<table id="inbox"><caption>Requests you may decide now</caption><thead><tr>'
            '<th scope="col">Request</th><th scope="col">Intent</th><th scope="col">Risk</th>'
            '<th scope="col">Blast radius</th><th scope="col">Requester</th>'
            '<th scope="col">Age</th><th scope="col">Steps and grants</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>"
        )
    # The inbox follows every outcome and redraws itself: decided requests leave it, new
    # ones come, with no reload.
    body = f'<div id="inbox-live" aria-live="polite">{body}</div>'
    return _page("Inbox", body, csrf=session.csrf, actor=session.actor_id)


def request_page(
    session: Any,
    view: Any,
    may_decide: Sequence[str],
    verified: tuple[bool, list[str]],
    audience: str,
) -> str:
    """A request: what it is, its history, whether it verifies, and its decision form."""
    request = view.request
    holds, findings = verified
    history = "".join(
        f"<li>revision {entry.revision}: {escape(entry.decision.category.value)}."
        f"{escape(entry.decision.type)} by {escape(entry.decision.actor.id)}</li>"
        for entry in view.history
    )
    shown = json.dumps(request_to_dict(request), indent=2, default=str)
    decide = ""
    if may_decide:
        decide = (
            '<section aria-labelledby="decide-title"><h2 id="decide-title">Your decision</h2>'
            f'<form id="decide" data-request-id="{escape(request.request_id)}" '
            f'data-revision="{request.revision}" data-actor="{escape(session.actor_id)}" '
            f'data-audience="{escape(audience)}" data-key-id="{escape(session.key_id)}" '
            f'data-approval-id="{escape(may_decide[0])}">'
            '<label for="reason">Reason (optional)</label> '
            '<input id="reason" name="reason" maxlength="2000">'
            '<button type="button" id="approve">Approve</button> '
            '<button type="button" id="reject">Reject</button></form>'
            '<div id="review" hidden><h3 id="review-title">What will be signed</h3>'
            '<pre id="to-sign" aria-labelledby="review-title" tabindex="0"></pre>'
            '<button type="button" id="sign">Sign with passkey and send</button> '
            '<button type="button" id="cancel">Cancel</button></div></section>'
        )
    body = (
        f'<p>Status <strong id="status-value">{escape(request.status.value)}</strong>, '
        f'revision <strong id="revision">{request.revision}</strong></p>'
        f"{decide}"
        '<p id="outcome" role="status" aria-live="assertive"></p>'
        '<section aria-labelledby="verify-title"><h2 id="verify-title">Verification</h2>'
        f'<p id="verify">{"verified: every decision holds" if holds else "NOT verified"}</p>'
        f"<ul>{''.join(f'<li>{escape(line)}</li>' for line in findings)}</ul></section>"
        '<section aria-labelledby="history-title"><h2 id="history-title">History</h2>'
        f'<ol id="history">{history}</ol></section>'
        '<section aria-labelledby="request-title"><h2 id="request-title">Request</h2>'
        f"<pre>{escape(shown)}</pre></section>"
    )
    return _page(f"Request {request.request_id}", body, csrf=session.csrf, actor=session.actor_id)
