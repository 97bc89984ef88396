"""Structured logs: one line per command outcome, text or JSON, with secrets redacted.

The outcome lines go to the ``governance.outcomes`` logger at INFO, which is enabled even
when the worker runs at Celery's default WARNING level. ``GOVERNANCE_LOG_FORMAT=json`` makes
every line of the worker's log a JSON object. Whatever the format, a password in a URL and
a command's signature never reach a log line.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

OUTCOMES = logging.getLogger("governance.outcomes")

#: The fields of an outcome line, in the order the text format writes them.
OUTCOME_FIELDS = (
    "command_id",
    "request_id",
    "type",
    "outcome",
    "code",
    "revision",
    "duration_ms",
    "batch_size",
)

_URL_PASSWORD = re.compile(r"(?P<keep>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@\s]*@")
_SIGNATURE = re.compile(r"""(?P<keep>["']signature["']\s*:\s*)(["'])[^"']*\2""")


def redact(text: str) -> str:
    """``text`` without passwords in URLs (``amqp://user:***@host``) or signature values."""
    text = _URL_PASSWORD.sub(r"\g<keep>:***@", text)
    return _SIGNATURE.sub(r"\g<keep>'***'", text)


class Redacting(logging.Filter):
    """Redacts a record's message (and traceback) before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, process, message, and the fields of an
    outcome line at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "pid": record.process,
            "message": redact(record.getMessage()),
        }
        fields = getattr(record, "governance", None)
        if isinstance(fields, Mapping):
            document.update(fields)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            document["exception"] = redact(record.exc_text)
        return json.dumps(document, ensure_ascii=False, default=str)


def configure(logger: logging.Logger, log_format: str) -> None:
    """Give every handler of ``logger`` the redaction (and, for ``json``, the JSON format)."""
    OUTCOMES.setLevel(logging.INFO)
    for handler in logger.handlers:
        if not any(isinstance(f, Redacting) for f in handler.filters):
            handler.addFilter(Redacting())
        if log_format == "json":
            handler.setFormatter(JsonFormatter())


def log_outcome(fields: Mapping[str, Any]) -> None:
    """One outcome line: ``fields`` has every name of :data:`OUTCOME_FIELDS`."""
    if not OUTCOMES.isEnabledFor(logging.INFO):
        return
    OUTCOMES.info(
        "command %s %s%s request=%s type=%s revision=%s duration_ms=%s batch_size=%s",
        fields["command_id"],
        fields["outcome"],
        f" ({fields['code']})" if fields["code"] else "",
        fields["request_id"],
        fields["type"],
        fields["revision"],
        fields["duration_ms"],
        fields["batch_size"],
        extra={"governance": fields},
    )
