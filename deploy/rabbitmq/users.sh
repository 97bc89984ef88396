#!/bin/sh
# The broker users of a deployment, each with only the permissions its part needs. Run it
# where `rabbitmqctl` reaches the broker (inside a broker container, or with
# GOVERNANCE_RABBITMQCTL naming the command, e.g. "rabbitmqctl -n rabbit@broker1"), as often
# as you like: it creates the users that are missing and sets every password and permission
# again.
#
# Each password comes from the environment or from a file (for secrets mounted as files),
# never from the command line:
#   GOVERNANCE_MQ_WORKER_PASSWORD      or GOVERNANCE_MQ_WORKER_PASSWORD_FILE
#   GOVERNANCE_MQ_PRODUCER_PASSWORD    or GOVERNANCE_MQ_PRODUCER_PASSWORD_FILE
#   GOVERNANCE_MQ_SUBSCRIBER_PASSWORD  or GOVERNANCE_MQ_SUBSCRIBER_PASSWORD_FILE
#   GOVERNANCE_MQ_OPERATOR_PASSWORD    or GOVERNANCE_MQ_OPERATOR_PASSWORD_FILE
# Optional: GOVERNANCE_MQ_VHOST (default /), GOVERNANCE_MQ_USER_PREFIX (default
# "governance-": the users are governance-worker, -producer, -subscriber and -operator).
#
# What each may do (RabbitMQ permissions: configure, write and read, each a regular
# expression over the names of queues and exchanges of the virtual host):
#   worker      declares, consumes and publishes to the worker's queues (commands, retry,
#               maintenance, dead letters), publishes events, and Celery's own control and
#               event exchanges (ping, `governance status`); the default exchange too
#               (retries and dead letters are sent through it). Workers and beat.
#   producer    publishes to the governance.commands exchange and nothing else; awaits
#               outcomes on private queues governance.producer.* bound to governance.events.
#               It cannot read the command queue, publish events or use the default exchange.
#   subscriber  declares, binds and reads its subscription queues governance.subscription.*
#               (and anonymous governance.watch.* ones) on governance.events; nothing else.
#   operator    the `governance` CLI: what a producer may do, plus reading, replaying and
#               purging dead letters, following events, and asking the workers for
#               `governance status` (Celery's remote control).
# None of them may declare or delete the worker's queues but the worker.
set -eu

ctl=${GOVERNANCE_RABBITMQCTL:-rabbitmqctl}
vhost=${GOVERNANCE_MQ_VHOST:-/}
prefix=${GOVERNANCE_MQ_USER_PREFIX:-governance-}

# Names, as regular expressions.
commands='governance\.commands'
retry='governance\.commands\.retry'
dead='governance\.commands\.dead'
maintenance='governance\.maintenance'
events='governance\.events'
# Publishing to the default exchange ("") is writing to amq.default.
default_exchange='amq\.default'
# Private, server-side-deleted queues of a client awaiting outcomes or following events.
replies='governance\.producer\.[0-9a-f]+'
watches='governance\.watch\.[0-9a-f]+'
subscriptions='governance\.subscription\..+'
# Celery's remote control (ping, inspect): its broadcast and reply exchanges and the reply
# queue of whoever asks; a worker adds its own control queue and Celery's worker events
# (the event exchange and the queues that listen to it).
asking='celery\.pidbox|reply\.celery\.pidbox|[0-9a-f-]+\.reply\.celery\.pidbox'
control="$asking|.+@.+\.celery\.pidbox|celeryev|celeryev\..+"

password() {
	# The password of role $1: its variable, else the file its _FILE variable names.
	var="GOVERNANCE_MQ_$1_PASSWORD"
	eval "value=\${$var:-}"
	eval "file=\${${var}_FILE:-}"
	if [ -z "$value" ] && [ -n "$file" ]; then
		value=$(cat "$file")
	fi
	if [ -z "$value" ]; then
		echo "set $var or ${var}_FILE" >&2
		exit 2
	fi
	printf '%s' "$value"
}

user() {
	# user ROLE CONFIGURE WRITE READ
	name="$prefix$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]')"
	secret=$(password "$1")
	# The password goes through standard input, never the command line.
	if $ctl -q list_users | cut -f1 | grep -qx "$name"; then
		printf '%s' "$secret" | $ctl -q change_password "$name" >/dev/null
	else
		printf '%s' "$secret" | $ctl -q add_user "$name" >/dev/null
	fi
	$ctl -q set_permissions -p "$vhost" "$name" "$2" "$3" "$4"
	echo "$name: configure '$2' write '$3' read '$4' on vhost $vhost"
}

user WORKER \
	"^($commands|$retry|$dead|$maintenance|$events|$control)\$" \
	"^($commands|$retry|$dead|$maintenance|$events|$default_exchange|$control)\$" \
	"^($commands|$retry|$dead|$maintenance|$control)\$"

user PRODUCER \
	"^($replies)\$" \
	"^($commands|$replies)\$" \
	"^($events|$replies)\$"

user SUBSCRIBER \
	"^($subscriptions|$watches)\$" \
	"^($subscriptions|$watches)\$" \
	"^($events|$subscriptions|$watches)\$"

user OPERATOR \
	"^($replies|$watches|$asking)\$" \
	"^($commands|$replies|$watches|$asking)\$" \
	"^($events|$dead|$replies|$watches|$asking)\$"
