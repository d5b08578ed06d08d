#!/bin/sh
# mq-setup.sh - the compose stack's broker identities, made through the management API
# of the rabbitmq service by a one-shot container before the workers start. Idempotent.
# Key invariant: the same permissions as scripts/mq-definitions.py (README, Security):
#   duo           vhost duo, configure/read ^(P\..*|amq\.gen-.*)$, write also amq.default
#   duo-upstream  vhost duo, configure/read ^amq\.gen-.*$, write ^P\.jobs$ only
# The administrator (RABBITMQ_DEFAULT_USER) replaces guest, which is never created.
set -eu
api="http://rabbitmq:15672/api"
P="${MQ_PREFIX:-duo}"
case "$P" in *[!A-Za-z0-9_-]*|"") echo "mq-setup: MQ_PREFIX may hold letters, digits, _ and - only" >&2; exit 1 ;; esac
put() { curl -fsS -o /dev/null -u "duo-admin:$RABBITMQ_ADMIN_PASSWORD" -H 'content-type: application/json' -X PUT "$api/$1" -d "$2"; }
# JSON strings: \\. is the regex \. (a literal dot).
worker='{"configure":"^(P\\..*|amq\\.gen-.*)$","write":"^(P\\..*|amq\\.gen-.*|amq\\.default)$","read":"^(P\\..*|amq\\.gen-.*)$"}'
upstream='{"configure":"^amq\\.gen-.*$","write":"^P\\.jobs$","read":"^amq\\.gen-.*$"}'
put vhosts/duo '{}'
put users/duo "{\"password\":\"$RABBITMQ_PASSWORD\",\"tags\":\"\"}"
put users/duo-upstream "{\"password\":\"$RABBITMQ_UPSTREAM_PASSWORD\",\"tags\":\"\"}"
put permissions/duo/duo "$(printf '%s' "$worker" | sed "s/P/$P/g")"
put permissions/duo/duo-upstream "$(printf '%s' "$upstream" | sed "s/P/$P/g")"
echo "mq-setup: users duo and duo-upstream on vhost duo"
