#!/usr/bin/env bash
# test_db_roles.sh - the least-privilege database roles: `duoctl migrate` grants each
# worker kind's role (duo_enroll, duo_auth, duo_import, made by scripts/services.sh)
# exactly its tables, idempotently, and revokes what was granted by hand; a worker role
# cannot CREATE TABLE, DROP or ALTER a table, or read a table it does not use; migrate
# refuses a missing role or a superuser with one line naming the setting.
# Prints "N passed, M failed"; exits non-zero on any failure.
set -u
ROOT="${DUO_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
BIN="${DUO_BIN_DIR:-$ROOT/build-test/bin}"
if [ -z "${DUO_DB_URL_AUTH:-}" ]; then eval "$("$ROOT/scripts/services.sh" env)"; fi
DB="duoroles_$$_${RANDOM}"
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1${2:+: $2}"; }
cleanup() { psql "$DUO_PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1; }
trap cleanup EXIT

psql "$DUO_PG_ADMIN_URL" -qc "CREATE DATABASE $DB" >/dev/null || { echo "cannot create $DB"; exit 1; }
ADMIN="${DUO_PG_ADMIN_URL%/*}/$DB"
url_of() { local v="DUO_DB_URL_${1^^}"; echo "${!v%/*}/$DB"; }
as_role() { psql "$(url_of "$1")" -XAtq -v ON_ERROR_STOP=1 -c "$2" 2>&1; }
migrate() { DATABASE_URL="$ADMIN" "$BIN/duoctl" migrate "$@" 2>&1; }

out="$(migrate)" && grep -q '"granted_roles":3' <<<"$out" && ok "migrate grants three roles" ||
  bad "migrate grants three roles" "$out"
out="$(migrate)" && grep -q '"applied":0,.*"granted_roles":3' <<<"$out" && ok "migrate again: idempotent" ||
  bad "migrate again: idempotent" "$out"

# Denied: DDL, and tables the kind does not use.
denied() { # denied ROLE SQL WHAT
  local out
  if out="$(as_role "$1" "$2")"; then bad "$1 $3" "succeeded: $out"
  elif grep -qE 'permission denied|must be owner' <<<"$out"; then ok "$1 $3 refused"
  else bad "$1 $3" "unexpected error: $out"; fi
}
allowed() { # allowed ROLE SQL WHAT
  local out
  if out="$(as_role "$1" "$2")"; then ok "$1 $3"; else bad "$1 $3" "$out"; fi
}
for r in enroll auth import; do
  denied "$r" "CREATE TABLE evil (id int)" "CREATE TABLE"
  denied "$r" "DROP TABLE job" "DROP TABLE"
  denied "$r" "ALTER TABLE job ADD COLUMN x int" "ALTER TABLE"
  denied "$r" "CREATE SCHEMA evil" "CREATE SCHEMA"
  denied "$r" "DELETE FROM job" "DELETE FROM job"
  denied "$r" "INSERT INTO duo_stage (name, api_hostname, client_id, client_secret_enc) VALUES ('x','x','x','x')" "writing duo_stage"
  denied "$r" "INSERT INTO schema_migrations (version, name) VALUES (999, 'x')" "writing schema_migrations"
  allowed "$r" "SELECT count(*) FROM job" "reads job"
  allowed "$r" "SELECT count(*) FROM duo_stage" "reads duo_stage"
  [ "$(as_role "$r" "SELECT rolsuper::int + rolcreatedb::int + rolcreaterole::int FROM pg_roles WHERE rolname = current_user")" = 0 ] &&
    ok "$r has no superuser/createdb/createrole" || bad "$r role attributes"
done
denied auth "SELECT count(*) FROM import_run" "reading import_run"
denied auth "SELECT count(*) FROM duo_enrollment" "reading duo_enrollment"
denied enroll "SELECT count(*) FROM auth_challenge" "reading auth_challenge"
denied enroll "SELECT count(*) FROM import_page" "reading import_page"
denied import "SELECT count(*) FROM duo_enrollment" "reading duo_enrollment"
denied import "SELECT count(*) FROM auth_challenge" "reading auth_challenge"
# No such user: the function runs (as its owner) and stops at the foreign key.
out="$(as_role auth "SELECT count(*) FROM auth_challenge_take(0, 0, 5, 300, 60)")"
grep -q 'violates foreign key' <<<"$out" && ok "auth executes auth_challenge_take" ||
  bad "auth executes auth_challenge_take" "$out"
denied enroll "SELECT count(*) FROM auth_challenge_take(0, 0, 5, 300, 60)" "executing auth_challenge_take"
allowed import "SELECT count(*) FROM import_pace" "reads import_pace"
allowed enroll "SELECT count(*) FROM duo_enrollment" "reads duo_enrollment"

# A privilege granted by hand is revoked by the next migrate.
psql "$ADMIN" -qc "GRANT SELECT ON import_run TO duo_auth" >/dev/null
allowed auth "SELECT count(*) FROM import_run" "reads import_run after a hand-made GRANT"
migrate >/dev/null
denied auth "SELECT count(*) FROM import_run" "reading import_run after migrate"

# Misconfigured roles: one line naming the setting, nothing granted.
out="$(DB_ROLE_AUTH=duo_no_such_role migrate)" && bad "missing role accepted" "$out" ||
  { grep -q "DB_ROLE_AUTH: role duo_no_such_role does not exist" <<<"$out" && [ "$(wc -l <<<"$out")" -eq 1 ] &&
    ok "missing role refused in one line" || bad "missing role message" "$out"; }
out="$(DB_ROLE_IMPORT=postgres migrate)" && bad "superuser role accepted" "$out" ||
  { grep -q "DB_ROLE_IMPORT: role postgres is a superuser" <<<"$out" && ok "superuser role refused" ||
    bad "superuser role message" "$out"; }
out="$(DB_ROLE_ENROLL='x; DROP TABLE job' migrate)" && bad "odd role name accepted" "$out" ||
  { grep -q "DB_ROLE_ENROLL: .* is not a plain role name" <<<"$out" && ok "odd role name refused" ||
    bad "odd role name message" "$out"; }
out="$(DB_ROLE_AUTH=none migrate)" && grep -q '"granted_roles":2' <<<"$out" && ok "DB_ROLE_AUTH=none skips a kind" ||
  bad "DB_ROLE_AUTH=none" "$out"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
