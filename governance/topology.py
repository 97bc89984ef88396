"""Names of the broker topology the contract fixes, shared by worker and producer.

Plain constants, so that every process declares the queues with the same arguments (RabbitMQ
refuses a redeclaration that differs).
"""

from __future__ import annotations

APPLY_COMMAND_TASK = "governance.apply_command"
COMMANDS_QUEUE = "governance.commands"
DEAD_LETTER_QUEUE = "governance.commands.dead"
EVENTS_EXCHANGE = "governance.events"

#: Where a command that failed inside a batch, or keeps failing, waits for its next attempt.
RETRY_QUEUE = "governance.commands.retry"
#: The scheduler's periodic work (expiry sweeps, outbox relay).
MAINTENANCE_QUEUE = "governance.maintenance"
EXPIRE_DUE_TASK = "governance.expire_due"
RELAY_OUTBOX_TASK = "governance.relay_outbox"

#: Every queue a worker consumes or parks messages in (for health checks and drains).
WORKER_QUEUES = (COMMANDS_QUEUE, RETRY_QUEUE, MAINTENANCE_QUEUE, DEAD_LETTER_QUEUE)

# The command queue is declared exactly as a plain Celery client auto-declares it (direct
# exchange of the same name, no queue arguments), so any client's ``send_task`` and the worker
# agree. Dead-lettering is therefore done by the worker, explicitly, not by queue arguments.

#: The deployment a signed command names when none is configured (``GOVERNANCE_AUDIENCE``).
DEFAULT_AUDIENCE = "governance"

#: Header that carries why a message was dead-lettered.
DEAD_LETTER_REASON_HEADER = "x-governance-dead-letter-reason"

#: Where the docker-compose services listen on localhost; every process's default.
DEFAULT_DATABASE_URL = "postgresql://governance:governance@localhost:5432/governance"
DEFAULT_BROKER_URL = "amqp://governance:governance@localhost:5672//"
