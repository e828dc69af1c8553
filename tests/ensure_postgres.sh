#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1:5432 with trust auth and a database `test`,
# installing and starting Debian's postgresql when none does. Store tests run against it.
set -euo pipefail
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  psql -h 127.0.0.1 -U postgres -tAc "select 1 from pg_database where datname='test'" 2>/dev/null | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -c "create database test" >/dev/null 2>&1 || true
  exit 0
fi
version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
if [ -z "$version" ]; then
  version=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n1)
  pg_createcluster "$version" main >/dev/null
fi
conf=/etc/postgresql/$version/main
# trust auth on loopback, as the test machine has it
sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/; s/^(local\s+all\s+(postgres|all)\s+)\S+/\1trust/' "$conf/pg_hba.conf"
pg_ctlcluster --skip-systemctl-redirect "$version" main start
for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
pg_isready -h 127.0.0.1 -p 5432
psql -h 127.0.0.1 -U postgres -tAc "select 1 from pg_database where datname='test'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -c "create database test" >/dev/null
