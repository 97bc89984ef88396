"""The contract as documents: JSON Schemas (draft 2020-12) of the commands, the events and
the approval policy document, and an AsyncAPI 3.0 document of the channels that carry them.

Everything is derived from the wire models in :mod:`governance.commands` and
:mod:`governance.events`, and from the policy reader's own tables
(:func:`governance.policy_document.policy_schema`), so a change to the contract changes
these documents with it. The
functions only build dictionaries and text; writing the files is the CLI's business
(``governance schema --write contract``).
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

from governance.commands import (
    IDENTIFIER_PATTERN,
    MAX_ID_LENGTH,
    WIRE_COMMANDS,
    CommandType,
    WireCommand,
)
from governance.events import APPLIED, EVENT_MODELS, REJECTED
from governance.parking import ParkCause
from governance.policy_document import policy_schema
from governance.task_message import CONTENT_TYPE
from governance.topology import (
    APPLY_COMMAND_TASK,
    COMMANDS_QUEUE,
    DEAD_LETTER_CAUSE_HEADER,
    DEAD_LETTER_QUEUE,
    DEAD_LETTER_REASON_HEADER,
    EVENTS_EXCHANGE,
)

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_FORMAT = "application/schema+json;version=draft-2020-12"
#: What ``governance schema`` prints for each name it takes besides the AsyncAPI document.
ENVELOPE = "command"
TASK_BODY = "task.apply_command"
#: The approval policy document (``contract/schemas/policy.schema.json``).
POLICY = "policy"
#: The longest dead-letter reason the worker keeps in its header.
MAX_DEAD_LETTER_REASON = 1000


def schema_names() -> tuple[str, ...]:
    """Every name :func:`schema_named` knows: the command types, the envelope, the events and
    the approval policy document."""
    return (*(t.value for t in CommandType), ENVELOPE, APPLIED, REJECTED, POLICY)


def schema_named(name: str) -> dict[str, Any]:
    """The JSON Schema called ``name`` (see :func:`schema_names`); KeyError for another."""
    if name == POLICY:
        return {
            **policy_schema(),
            "$schema": DRAFT_2020_12,
            "$id": _schema_id("policy"),
            "title": "An approval policy document (YAML or JSON)",
        }
    if name == ENVELOPE:
        return _standalone(WireCommand, "command", "Any governance command")
    if name in EVENT_MODELS:
        return _standalone(EVENT_MODELS[name], f"event.{name}", f"The {name} event")
    command_type = CommandType(name) if name in CommandType._value2member_map_ else None
    if command_type is None:
        raise KeyError(name)
    return _standalone(
        WIRE_COMMANDS[command_type], f"command.{name}", f"The {name} command, its args included"
    )


def documents() -> dict[str, dict[str, Any]]:
    """Every document of the contract by its path under the contract directory."""
    found = {
        f"schemas/{_file_stem(name)}.json": schema_named(name)
        for name in (ENVELOPE, *(t.value for t in CommandType), APPLIED, REJECTED)
    }
    found[f"schemas/{TASK_BODY}.json"] = task_body_schema()
    found[f"schemas/{POLICY}.schema.json"] = schema_named(POLICY)
    found["asyncapi.json"] = asyncapi_document()
    return found


def render(document: dict[str, Any]) -> str:
    """``document`` as the checked-in text: sorted keys, two-space indent, final newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _file_stem(name: str) -> str:
    if name == ENVELOPE:
        return ENVELOPE
    return f"event.{name}" if name in EVENT_MODELS else f"command.{name}"


def _standalone(model: Any, stem: str, title: str) -> dict[str, Any]:
    """The schema of ``model`` as one document: its definitions under ``$defs``."""
    (root,), defs = msgspec.json.schema_components([model], ref_template="#/$defs/{name}")
    if "$ref" in root:
        root = defs.pop(root["$ref"].rsplit("/", 1)[-1])
    document = {**root, "$schema": DRAFT_2020_12, "$id": _schema_id(stem), "title": title}
    if defs:
        document["$defs"] = defs
    return _renamed(_plain(document))


def task_body_schema() -> dict[str, Any]:
    """The body of a ``governance.apply_command`` task message (Celery protocol 2): the
    array ``[args, kwargs, embed]`` with the command as the only positional argument."""
    command = schema_named(ENVELOPE)
    defs = command.pop("$defs")
    for key in ("$schema", "$id", "title"):
        command.pop(key)
    return {
        "$schema": DRAFT_2020_12,
        "$id": _schema_id(TASK_BODY),
        "title": f"The body of a {APPLY_COMMAND_TASK} task message",
        "type": "array",
        "prefixItems": [
            {
                "description": "args: the command, the only positional argument",
                "type": "array",
                "prefixItems": [{"$ref": "#/$defs/Command"}],
                "minItems": 1,
                "maxItems": 1,
            },
            {"description": "kwargs: none", "type": "object", "maxProperties": 0},
            {
                "description": "embed: Celery's callbacks, errbacks, chain and chord",
                "type": "object",
            },
        ],
        "minItems": 3,
        "maxItems": 3,
        "$defs": {**defs, "Command": command},
    }


def _schema_id(stem: str) -> str:
    return f"urn:governance:contract:{stem}"


def _plain(schema: Any) -> Any:
    """Without msgspec's OpenAPI ``discriminator``, which JSON Schema and AsyncAPI do not
    read as it writes it (every member of the union fixes ``type`` with a ``const`` or
    ``enum`` anyway)."""
    if isinstance(schema, dict):
        return {k: _plain(v) for k, v in schema.items() if k != "discriminator"}
    if isinstance(schema, list):
        return [_plain(item) for item in schema]
    return schema


def _renamed(schema: dict[str, Any]) -> dict[str, Any]:
    """Definitions named in the contract's words: ``WireApprove`` is ``ApproveCommand``,
    ``WireActor`` is ``Actor``."""
    commands = {wire.__name__ for wire in WIRE_COMMANDS.values()}

    def contract_name(name: str) -> str:
        plain = name.removeprefix("Wire")
        return f"{plain}Command" if name in commands else plain

    # Class names appear only as definition names, references and titles.
    text = re.sub(
        r'"(#/\$defs/)?(Wire\w+)"',
        lambda m: f'"{m[1] or ""}{contract_name(m[2])}"',
        json.dumps(schema),
    )
    renamed: dict[str, Any] = json.loads(text)
    return renamed


# --------------------------------------------------------------------------- AsyncAPI


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document: the command queue, the event exchange and the dead-letter
    queue, with their messages and the schemas of what they carry."""
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "governance",
            "version": "1",
            "description": "Transition commands in, outcome events out, over RabbitMQ.",
        },
        "defaultContentType": CONTENT_TYPE,
        "channels": {
            "commands": {
                "address": COMMANDS_QUEUE,
                "description": "The queue of transition commands, each a Celery task message "
                f"(protocol 2) for the task {APPLY_COMMAND_TASK}, published to the direct "
                "exchange of the same name (routing key the same name). In signed mode a "
                "command carries auth: {key_id, signature}, Ed25519 (base64url, no padding) "
                "over the UTF-8 RFC 8785 (JCS) canonical JSON of the command object exactly as "
                "sent, without its auth member, by a key registered for its actor.id; or "
                "{scheme: webauthn, key_id, authenticator_data, client_data_json, signature}, "
                "a passkey's assertion whose challenge is the SHA-256 of those same bytes. It "
                "must carry issued_at and audience. The outcome event answers it by command_id "
                "and actor; an unauthenticated answer names the message it answers "
                "(command_sha256).",
                "messages": {"applyCommand": {"$ref": "#/components/messages/applyCommand"}},
                "bindings": {"amqp": {"is": "queue", "queue": {"name": COMMANDS_QUEUE}}},
            },
            "events": {
                "address": EVENTS_EXCHANGE,
                "description": "The topic exchange of outcome events: routing key "
                f"{APPLIED}.<command_type> or {REJECTED}.<rejection code>. Anyone who may "
                "publish here could forge an outcome, so every event carries the publishing "
                "worker's signature as proof: {key_id, signature}, Ed25519 (base64url, no "
                "padding) over the UTF-8 RFC 8785 (JCS) canonical JSON of the event without "
                "its proof member. A subscriber verifies it against the registered public "
                "keys of active actors holding the worker role (a revoked key does not "
                "verify) and acts on no event that does not verify. proof is null only from "
                "a development-mode worker without a key (authenticated: false).",
                "messages": {
                    "transitionApplied": {"$ref": "#/components/messages/transitionApplied"},
                    "transitionRejected": {"$ref": "#/components/messages/transitionRejected"},
                },
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": {
                            "name": EVENTS_EXCHANGE,
                            "type": "topic",
                            "durable": True,
                            "autoDelete": False,
                        },
                    }
                },
            },
            "deadLetters": {
                "address": DEAD_LETTER_QUEUE,
                "description": "Messages no event could answer, kept with the reason in the "
                f"{DEAD_LETTER_REASON_HEADER} header and its cause in the "
                f"{DEAD_LETTER_CAUSE_HEADER} header: the command object they carried, or "
                "their body as it came.",
                "messages": {"deadLetter": {"$ref": "#/components/messages/deadLetter"}},
                "bindings": {"amqp": {"is": "queue", "queue": {"name": DEAD_LETTER_QUEUE}}},
            },
        },
        "operations": {
            "sendCommand": _operation("send", "commands", "applyCommand"),
            "applyCommand": _operation("receive", "commands", "applyCommand"),
            "publishTransitionApplied": _operation("send", "events", "transitionApplied"),
            "publishTransitionRejected": _operation("send", "events", "transitionRejected"),
            "receiveEvents": _operation(
                "receive", "events", "transitionApplied", "transitionRejected"
            ),
            "parkDeadLetter": _operation("send", "deadLetters", "deadLetter"),
        },
        "components": {
            "schemas": {
                name: {"schemaFormat": SCHEMA_FORMAT, "schema": schema}
                for name, schema in (
                    (TASK_BODY, task_body_schema()),
                    (ENVELOPE, schema_named(ENVELOPE)),
                    (f"event.{APPLIED}", schema_named(APPLIED)),
                    (f"event.{REJECTED}", schema_named(REJECTED)),
                )
            },
            "messages": {
                "applyCommand": {
                    "name": APPLY_COMMAND_TASK,
                    "title": "A transition command as a Celery task message",
                    "contentType": CONTENT_TYPE,
                    "headers": _task_headers(),
                    "payload": {"$ref": f"#/components/schemas/{TASK_BODY}"},
                },
                "transitionApplied": _event_message(APPLIED, "<command_type>"),
                "transitionRejected": _event_message(REJECTED, "<rejection code>"),
                "deadLetter": {
                    "name": "dead-letter",
                    "title": "A message no event could answer",
                    "headers": {
                        "type": "object",
                        "required": [DEAD_LETTER_REASON_HEADER],
                        "properties": {
                            DEAD_LETTER_REASON_HEADER: {
                                "type": "string",
                                "maxLength": MAX_DEAD_LETTER_REASON,
                                "description": "Why the message was dead-lettered: a "
                                "sentence about this message, for people.",
                            },
                            DEAD_LETTER_CAUSE_HEADER: {
                                "type": "string",
                                "enum": [cause.value for cause in ParkCause],
                                "description": "The cause it was dead-lettered for, for "
                                "programs (absent on letters of earlier versions).",
                            },
                        },
                    },
                    "payload": {
                        "description": "The command object the message carried (as sent, "
                        "possibly invalid), or the raw body when it carried none.",
                    },
                },
            },
        },
    }


def _operation(action: str, channel: str, *messages: str) -> dict[str, Any]:
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"} for name in messages],
    }


def _task_headers() -> dict[str, Any]:
    task_id = {"type": "string", "maxLength": MAX_ID_LENGTH, "pattern": IDENTIFIER_PATTERN}
    nullable = {"type": ["string", "null"]}
    return {
        "type": "object",
        "required": ["task", "id"],
        "properties": {
            "task": {"const": APPLY_COMMAND_TASK},
            "id": {**task_id, "description": "The task id (a UUID from send_task)."},
            "lang": {"const": "py"},
            "root_id": nullable,
            "parent_id": nullable,
            "group": nullable,
            "retries": {"type": "integer", "minimum": 0},
            "eta": nullable,
            "expires": nullable,
            "timelimit": {"type": "array"},
            "argsrepr": {"type": "string"},
            "kwargsrepr": {"type": "string"},
            "origin": {"type": "string"},
        },
    }


def _event_message(event: str, suffix: str) -> dict[str, Any]:
    return {
        "name": event,
        "title": f"The {event} event (routing key {event}.{suffix})",
        "description": "Published persistent (delivery mode 2) with message_id = the event's "
        "event_id, at least once: a subscriber deduplicates by event_id (a redelivered or "
        "re-published event keeps its event_id and sequence). sequence orders a request's "
        "events (revision order); across requests it is the log's order, with gaps.",
        "contentType": CONTENT_TYPE,
        "headers": {
            "type": "object",
            "properties": {
                "sequence": {
                    "type": "integer",
                    "description": "The event's sequence in the log, as in its body: read it "
                    "without decoding the body.",
                },
                "traceparent": {
                    "type": "string",
                    "description": "W3C trace context of the command's trace, when traced.",
                },
            },
        },
        "bindings": {"amqp": {"deliveryMode": 2, "bindingVersion": "0.3.0"}},
        "payload": {"$ref": f"#/components/schemas/event.{event}"},
    }
