"""The bench's actors: each registered once with a fresh key, every command signed with it,
as the worker's default (signed) mode requires. Signing happens before a phase's clock
starts, so the figures measure the service, not the bench's signing."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg

from governance.topology import DEFAULT_AUDIENCE
from producer.keys import SigningKey, generate, write_key_file
from producer.signing import sign_command
from worker import registry

#: Every bench actor may send every command: the bench measures the path, not the roles.
ROLES = ("requester", "approver", "operator")
#: The actor the bench's governance workers sign their events as.
WORKER_ACTOR = "bench-worker"


class Identities:
    """Keys of the bench's actors, registered in the bench's database on first use."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.keys: dict[str, SigningKey] = {}

    def sign(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``payload`` signed by its actor (registered first if new)."""
        return sign_command(payload, self._key(payload["actor"]["id"]), audience=DEFAULT_AUDIENCE)

    def sign_all(self, payloads: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self.sign(payload) for payload in payloads]

    def worker_key_file(self, directory: Path) -> Path:
        """The workers' key file (``GOVERNANCE_WORKER_KEY``), made and registered with the
        ``worker`` role once: every governance worker of the run signs its events with it."""
        path = directory / "bench-worker.key"
        if not path.exists():
            key = generate(WORKER_ACTOR)
            with psycopg.connect(self.database_url, autocommit=True) as conn:
                registry.add_actor(
                    conn,
                    WORKER_ACTOR,
                    "Bench worker",
                    "service",
                    ["worker"],
                    [],
                    public_key=key.public_key_b64,
                    key_id=key.key_id,
                )
            write_key_file(key, path)
        return path

    def _key(self, actor_id: str) -> SigningKey:
        key = self.keys.get(actor_id)
        if key is None:
            key = generate(actor_id)
            with psycopg.connect(self.database_url, autocommit=True) as conn:
                try:
                    registry.add_actor(
                        conn,
                        actor_id,
                        None,
                        "service",
                        list(ROLES),
                        [],
                        public_key=key.public_key_b64,
                        key_id=key.key_id,
                    )
                except registry.RegistryError:
                    registry.add_key(conn, actor_id, key.public_key_b64, key.key_id)
            self.keys[actor_id] = key
        return key
