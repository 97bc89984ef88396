#!/bin/sh
# Every node of a RabbitMQ cluster must share one Erlang cookie. It comes from the
# environment (GOVERNANCE_RABBITMQ_COOKIE) and is written where the server reads it, readable
# by the server's account only, before the image's own entrypoint takes over.
set -eu

: "${GOVERNANCE_RABBITMQ_COOKIE:?set GOVERNANCE_RABBITMQ_COOKIE (see .env.example or .env.ha.example)}"
cookie=/var/lib/rabbitmq/.erlang.cookie
umask 077
printf '%s' "$GOVERNANCE_RABBITMQ_COOKIE" > "$cookie"
chown rabbitmq:rabbitmq "$cookie"
chmod 400 "$cookie"

exec docker-entrypoint.sh "$@"
