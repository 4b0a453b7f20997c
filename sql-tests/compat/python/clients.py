"""Python drivers against a running Rivulet: psycopg 3, psycopg2, asyncpg and SQLAlchemy's inspect().

Run by sql-tests/tests/compat_clients.rs with the venv scripts/deps-compat installs, against a server
holding the table `bids` and the materialized view `per_auction` (see that test for the rows).
Each check compares results with what PostgreSQL returns for the same rows; the last line is
"N passed, M failed" and the exit code is non-zero if any check failed.

Usage: clients.py PORT
"""

import asyncio
import datetime

from harness import BIDS, BIDS_SQL, DSN, PER_AUCTION, PORT, URL, VIEW_SQL, check, expect, finish

# --- psycopg 3 -------------------------------------------------------------------------------------
import psycopg  # noqa: E402
from psycopg.rows import dict_row  # noqa: E402


@check("psycopg: table rows with native types (text results)")
def _():
    with psycopg.connect(DSN) as conn:
        expect(conn.execute(BIDS_SQL).fetchall(), BIDS)


@check("psycopg: the session's TimeZone from startup options, in ParameterStatus and values")
def _():
    options = "-c TimeZone=america/new_york -c statement_timeout=5s"
    with psycopg.connect(DSN, options=options) as conn:
        expect(conn.info.parameter_status("TimeZone"), "America/New_York")
        expect(conn.execute("SHOW statement_timeout").fetchone(), ("5s",))
        row = conn.execute(
            "SELECT '2024-03-05 00:30'::timestamptz, "
            "date_trunc('day', '2024-03-05 04:00+00'::timestamptz)::text"
        ).fetchone()
        ny = datetime.timezone(datetime.timedelta(hours=-5))
        expect(row, (datetime.datetime(2024, 3, 5, 0, 30, tzinfo=ny), "2024-03-04 00:00:00-05"))
        # A SET reports the new zone (ParameterStatus), a ROLLBACK that undoes one the old.
        conn.execute("SET TIME ZONE 'Asia/Tokyo'")
        expect(conn.info.parameter_status("TimeZone"), "Asia/Tokyo")
        conn.commit()
        conn.execute("SET TIME ZONE 'UTC'")
        conn.rollback()
        expect(conn.info.parameter_status("TimeZone"), "Asia/Tokyo")


@check("psycopg: numeric parameters keep the decimals they were written with")
def _():
    import decimal

    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("CREATE TABLE py_scales (id int, a numeric)")
        try:
            conn.execute("INSERT INTO py_scales VALUES (%s, %s)", (1, decimal.Decimal("1.50")))
            conn.execute("INSERT INTO py_scales VALUES (%s, %s)", (2, "2.500"))
            query = "SELECT a, a * 2, sum(a) OVER () FROM py_scales ORDER BY id"
            rows = [tuple(str(v) for v in r) for r in conn.execute(query).fetchall()]
            expect(rows, [("1.50", "3.00", "4.000"), ("2.500", "5.000", "4.000")])
            binary = conn.execute("SELECT a FROM py_scales ORDER BY id", binary=True).fetchall()
            expect([str(r[0]) for r in binary], ["1.50", "2.500"])
        finally:
            conn.execute("DROP TABLE py_scales")


@check("psycopg: materialized view rows")
def _():
    with psycopg.connect(DSN) as conn:
        expect(conn.execute(VIEW_SQL).fetchall(), PER_AUCTION)


@check("psycopg: a comment-only query is an empty query (pgx's health check)")
def _():
    with psycopg.connect(DSN, autocommit=True) as conn:
        for query in (b"-- ping", b"/* ping */ ;", b""):
            expect(conn.pgconn.exec_(query).status, psycopg.pq.ExecStatus.EMPTY_QUERY)
        cur = conn.execute("-- ping")
        expect(cur.pgresult.status, psycopg.pq.ExecStatus.EMPTY_QUERY)


@check("psycopg: server-side binding of parameters")
def _():
    with psycopg.connect(DSN) as conn:
        rows = conn.execute(
            "SELECT price FROM bids WHERE auction = %s AND channel = %s ORDER BY price", (1, "web")
        ).fetchall()
        expect(rows, [(10,)])


@check("psycopg: binary results")
def _():
    with psycopg.connect(DSN) as conn:
        with conn.cursor(binary=True) as cur:
            cur.execute(BIDS_SQL)
            expect(cur.fetchall(), BIDS)
            cur.execute(VIEW_SQL)
            expect(cur.fetchall(), PER_AUCTION)


@check("psycopg: pipeline mode")
def _():
    with psycopg.connect(DSN) as conn:
        with conn.pipeline():
            a = conn.execute("SELECT count(*) FROM bids")
            b = conn.execute("SELECT sum(n) FROM per_auction WHERE auction >= %s", (1,))
        expect(a.fetchone(), (3,))
        expect(b.fetchone(), (3,))


@check("psycopg: column names as Postgres gives them (dict rows)")
def _():
    with psycopg.connect(DSN, row_factory=dict_row) as conn:
        row = conn.execute("SELECT count(*), max(price), 1, auction FROM bids GROUP BY auction ORDER BY auction").fetchone()
        expect(row, {"count": 2, "max": 30, "?column?": 1, "auction": 1})


@check("psycopg: error SQLSTATE, then ROLLBACK recovers the transaction")
def _():
    with psycopg.connect(DSN) as conn:
        try:
            conn.execute("SELECT * FROM no_such_table")
            raise AssertionError("no error")
        except psycopg.errors.UndefinedTable as e:
            expect(e.sqlstate, "42P01")
        conn.rollback()
        expect(conn.execute("SELECT count(*) FROM per_auction").fetchone(), (2,))


@check("psycopg: a failed nested transaction() rolls back to its savepoint, the outer one goes on")
def _():
    from psycopg.pq import TransactionStatus

    with psycopg.connect(DSN) as conn:
        with conn.transaction():
            try:
                with conn.transaction():  # SAVEPOINT; the error rolls back to it
                    conn.execute("SELECT * FROM no_such_table")
            except psycopg.errors.UndefinedTable:
                pass
            # Postgres reports the block as open again (T), not failed (E).
            expect(conn.info.transaction_status, TransactionStatus.INTRANS)
            expect(conn.execute("SELECT count(*) FROM per_auction").fetchone(), (2,))
        expect(conn.info.transaction_status, TransactionStatus.IDLE)
        # The same by hand, in the simple protocol (a ClientCursor sends Query messages).
        conn.autocommit = True
        cur = psycopg.ClientCursor(conn)
        cur.execute("BEGIN")
        cur.execute("SAVEPOINT s")
        try:
            cur.execute("SELECT 1/0")
        except psycopg.errors.DivisionByZero:
            pass
        expect(conn.info.transaction_status, TransactionStatus.INERROR)
        cur.execute("ROLLBACK TO SAVEPOINT s")
        expect(conn.info.transaction_status, TransactionStatus.INTRANS)
        try:
            cur.execute("ROLLBACK TO SAVEPOINT nope")
        except psycopg.errors.InvalidSavepointSpecification:
            pass
        expect(conn.info.transaction_status, TransactionStatus.INERROR)
        cur.execute("ROLLBACK")
        expect(conn.info.transaction_status, TransactionStatus.IDLE)


def tx_database(name):
    """A fresh database `name` holding an empty table t (id INT PRIMARY KEY, v TEXT); its DSN."""
    with psycopg.connect(DSN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    dsn = DSN.replace("dbname=dev", f"dbname={name}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id INT PRIMARY KEY, v TEXT)")
    return dsn


@check("psycopg: rollback() discards the block's writes, commit() keeps them, a nested block rolls back alone")
def _():
    dsn = tx_database("tx_psycopg")
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO t VALUES (%s, %s)", (1, "a"))
        expect(conn.execute("SELECT count(*) FROM t").fetchone(), (1,))
        conn.rollback()
        expect(conn.execute("SELECT count(*) FROM t").fetchone(), (0,))
        conn.execute("INSERT INTO t VALUES (2, 'b')")
        try:
            with conn.transaction():  # SAVEPOINT
                conn.execute("INSERT INTO t VALUES (3, 'c')")
                conn.execute("INSERT INTO t VALUES (2, 'again')")
        except psycopg.errors.UniqueViolation:
            pass
        conn.commit()
    # A connection closed inside a block rolls it back.
    conn = psycopg.connect(dsn)
    conn.execute("INSERT INTO t VALUES (4, 'd')")
    conn.close()
    with psycopg.connect(dsn) as other:
        expect(other.execute("SELECT id, v FROM t ORDER BY id").fetchall(), [(2, "b")])


@check("psycopg: TypeInfo.fetch introspects a type")
def _():
    from psycopg.types import TypeInfo

    with psycopg.connect(DSN) as conn:
        info = TypeInfo.fetch(conn, "int8")
        expect((info.name, info.oid, info.array_oid), ("int8", 20, 1016))


# --- psycopg2 --------------------------------------------------------------------------------------
import psycopg2  # noqa: E402
import psycopg2.errors  # noqa: E402


@check("psycopg2: table rows with parameters")
def _():
    conn = psycopg2.connect(DSN)
    try:
        cur = conn.cursor()
        cur.execute("SELECT auction, price, channel, ts FROM bids WHERE auction >= %s ORDER BY auction, price", (1,))
        expect(cur.fetchall(), BIDS)
        expect([d.name for d in cur.description], ["auction", "price", "channel", "ts"])
    finally:
        conn.close()


@check("psycopg2: materialized view rows")
def _():
    conn = psycopg2.connect(DSN)
    try:
        cur = conn.cursor()
        cur.execute(VIEW_SQL)
        expect(cur.fetchall(), PER_AUCTION)
    finally:
        conn.close()


@check("psycopg2: error SQLSTATE, then ROLLBACK recovers the transaction")
def _():
    conn = psycopg2.connect(DSN)
    try:
        cur = conn.cursor()
        try:
            cur.execute("SELECT * FROM no_such_table")
            raise AssertionError("no error")
        except psycopg2.errors.UndefinedTable as e:
            expect(e.pgcode, "42P01")
        conn.rollback()
        cur.execute("SELECT count(*) FROM bids")
        expect(cur.fetchone(), (3,))
        expect(conn.server_version >= 160000, True)
    finally:
        conn.close()


@check("psycopg2: rollback() discards the block's writes, commit() keeps them")
def _():
    dsn = tx_database("tx_psycopg2")
    conn = psycopg2.connect(dsn)
    try:
        cur = conn.cursor()
        cur.execute("INSERT INTO t VALUES (%s, %s)", (1, "a"))
        conn.rollback()
        cur.execute("INSERT INTO t VALUES (%s, %s)", (2, "b"))
        cur.execute("UPDATE t SET v = %s WHERE id = %s", ("B", 2))
        conn.commit()
        cur.execute("SELECT id, v FROM t ORDER BY id")
        expect(cur.fetchall(), [(2, "B")])
    finally:
        conn.close()


# --- asyncpg ---------------------------------------------------------------------------------------
import asyncpg  # noqa: E402


@check("asyncpg: table rows with a parameter (extended protocol, binary)")
async def _():
    conn = await asyncpg.connect(URL)
    try:
        rows = await conn.fetch(
            "SELECT auction, price, channel, ts FROM bids WHERE auction >= $1 ORDER BY auction, price", 1
        )
        expect([tuple(r) for r in rows], BIDS)
    finally:
        await conn.close()


@check("asyncpg: materialized view rows by column name")
async def _():
    conn = await asyncpg.connect(URL)
    try:
        rows = await conn.fetch(VIEW_SQL)
        expect([(r["auction"], r["n"], r["total"]) for r in rows], PER_AUCTION)
    finally:
        await conn.close()


@check("asyncpg: named prepared statement reused, with its attributes")
async def _():
    conn = await asyncpg.connect(URL)
    try:
        stmt = await conn.prepare("SELECT n, total FROM per_auction WHERE auction = $1")
        expect(tuple(await stmt.fetchrow(1)), (2, 40))
        expect(tuple(await stmt.fetchrow(2)), (1, 20))
        expect([(a.name, a.type.name) for a in stmt.get_attributes()], [("n", "int8"), ("total", "numeric")])
    finally:
        await conn.close()


@check("asyncpg: arrays as parameters and results (its type introspection query)")
async def _():
    conn = await asyncpg.connect(URL)
    try:
        # asyncpg has no built-in codec for int8[] or text[]: it introspects them first.
        rows = await conn.fetch("SELECT auction, price FROM bids WHERE auction = ANY($1) ORDER BY price", [2])
        expect([tuple(r) for r in rows], [(2, 20)])
        row = await conn.fetchrow("SELECT $1::text[] AS t, $2::bigint[] AS b", ["web", None], [1, None, 3])
        expect((row["t"], row["b"]), (["web", None], [1, None, 3]))
        prices = await conn.fetch(
            "SELECT auction, array_agg(price ORDER BY price) AS prices FROM bids GROUP BY auction ORDER BY auction"
        )
        expect([(r["auction"], r["prices"]) for r in prices], [(1, [10, 30]), (2, [20])])
    finally:
        await conn.close()


@check("asyncpg: error SQLSTATE inside a transaction, then the connection works")
async def _():
    conn = await asyncpg.connect(URL)
    try:
        try:
            async with conn.transaction():
                await conn.fetch("SELECT * FROM no_such_table")
            raise AssertionError("no error")
        except asyncpg.exceptions.UndefinedTableError as e:
            expect(e.sqlstate, "42P01")
        expect(await conn.fetchval("SELECT count(*) FROM bids"), 3)
    finally:
        await conn.close()


@check("asyncpg: a JSONB column, its codec registered, queried with ->> and a parameter")
async def _():
    import json

    conn = await asyncpg.connect(URL)
    try:
        await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
        expect(
            await conn.fetchval("SELECT ('{\"a\": {\"b\": 7}}'::jsonb)->'a'->>'b' WHERE $1 > 0", 1),
            "7",
        )
    finally:
        await conn.close()


@check("asyncpg: a JSONB table column is jsonb on the wire, decoded by the registered codec")
async def _():
    import json

    conn = await asyncpg.connect(URL)
    try:
        await conn.execute("CREATE TABLE docs (id INT, d JSONB)")
        await conn.execute("""INSERT INTO docs VALUES (1, '{"a": {"b": [1, 2]}}')""")
        await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
        row = await conn.fetchrow("SELECT d, d -> 'a' AS a, d ->> 'a' AS t FROM docs WHERE id = $1", 1)
        expect(dict(row), {"d": {"a": {"b": [1, 2]}}, "a": {"b": [1, 2]}, "t": '{"b": [1, 2]}'})
        stmt = await conn.prepare("SELECT d FROM docs")
        expect([a.type.name for a in stmt.get_attributes()], ["jsonb"])
        await conn.execute("DROP TABLE docs")
    finally:
        await conn.close()


@check("asyncpg and psycopg: a UUID column, binary on the wire both ways, as uuid.UUID")
async def _():
    import uuid

    key = uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    conn = await asyncpg.connect(URL)
    try:
        await conn.execute("CREATE TABLE accounts (id UUID PRIMARY KEY, n INT)")
        await conn.execute("INSERT INTO accounts VALUES ($1, $2)", key, 1)
        row = await conn.fetchrow("SELECT id, n FROM accounts WHERE id = $1", key)
        expect((uuid.UUID(str(row["id"])), row["n"]), (key, 1))
        fresh = await conn.fetchval("SELECT gen_random_uuid()")
        expect(fresh.version, 4)
    finally:
        await conn.close()
    with psycopg.connect(DSN, autocommit=True) as conn:
        expect(conn.execute("SELECT n FROM accounts WHERE id = %s", (key,)).fetchall(), [(1,)])
        expect(conn.cursor(binary=True).execute("SELECT id FROM accounts").fetchall(), [(key,)])
        conn.execute("DROP TABLE accounts")


@check("asyncpg and psycopg: INSERT .. ON CONFLICT DO UPDATE with parameters in the SET list, RETURNING")
async def _():
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("CREATE TABLE counters (k TEXT PRIMARY KEY, n INT NOT NULL)")
        upsert = "INSERT INTO counters VALUES (%s, %s) ON CONFLICT (k) DO UPDATE SET n = counters.n + %s RETURNING n"
        expect([conn.execute(upsert, ("a", 1, 10)).fetchone()[0] for _ in range(3)], [1, 11, 21])
    conn = await asyncpg.connect(URL)
    try:
        upsert = "INSERT INTO counters VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET n = EXCLUDED.n + $3 RETURNING k, n"
        rows = [tuple(await conn.fetchrow(upsert, "b", 5, 100)) for _ in range(2)]
        expect(rows, [("b", 5), ("b", 105)])
        await conn.execute("DROP TABLE counters")
    finally:
        await conn.close()


# --- SQLAlchemy 2.x ---------------------------------------------------------------------------------
import sqlalchemy_checks  # noqa: E402

# psycopg 3 is SQLAlchemy's default PostgreSQL driver in 2.x; psycopg2 is what Superset installs.
sqlalchemy_checks.run(["psycopg", "psycopg2"], tx_database)

finish()
