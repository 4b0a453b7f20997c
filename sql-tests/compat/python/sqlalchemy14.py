"""SQLAlchemy 1.4 with psycopg2 against a running Rivulet (the version Superset and many older
applications pin; its catalog queries differ from 2.x's). Run by sql-tests/tests/compat_clients.rs
with the second venv scripts/deps-compat installs. Usage: sqlalchemy14.py PORT
"""

import psycopg2

import sqlalchemy_checks
from harness import DSN, finish


def tx_database(name):
    """A fresh database `name` holding an empty table t (id INT PRIMARY KEY, v TEXT); its DSN."""
    admin = psycopg2.connect(DSN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
        cur.execute(f"CREATE DATABASE {name}")
    admin.close()
    dsn = DSN.replace("dbname=dev", f"dbname={name}")
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v TEXT)")
    conn.close()
    return dsn


sqlalchemy_checks.run(["psycopg2"], tx_database)
finish()
