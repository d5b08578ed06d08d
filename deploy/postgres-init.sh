#!/bin/sh
# postgres-init.sh - the compose stack's database identities, run once by the postgres
# image on a fresh data volume (/docker-entrypoint-initdb.d). Key invariant: the owner
# (duo_owner) owns database duo and runs migrations; each worker kind has its own login
# role, which `duoctl migrate` grants exactly its tables; none is a superuser.
# Passwords come from the container's environment (see docker-compose.yml).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v owner_pw="$DB_OWNER_PASSWORD" -v enroll_pw="$DB_ENROLL_PASSWORD" \
  -v auth_pw="$DB_AUTH_PASSWORD" -v import_pw="$DB_IMPORT_PASSWORD" <<'SQL'
CREATE ROLE duo_owner LOGIN PASSWORD :'owner_pw';
CREATE ROLE duo_enroll LOGIN PASSWORD :'enroll_pw';
CREATE ROLE duo_auth LOGIN PASSWORD :'auth_pw';
CREATE ROLE duo_import LOGIN PASSWORD :'import_pw';
CREATE DATABASE duo OWNER duo_owner;
SQL
