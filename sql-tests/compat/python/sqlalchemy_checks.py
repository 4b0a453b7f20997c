"""SQLAlchemy against a running Rivulet: inspect() (the catalog queries BI tools such as Superset
send), Core queries of a reflected materialized view, and Session rollback. Shared by clients.py
(SQLAlchemy 2.x) and sqlalchemy14.py (1.4, which Superset and many older applications pin); the
two versions send different catalog queries."""

import sqlalchemy
from sqlalchemy import Column, Identity, Integer, MetaData, String, Table, inspect, select, text
from sqlalchemy.orm import Session, declarative_base

from harness import PER_AUCTION, PORT, check, expect

VERSION = sqlalchemy.__version__


def materialized_view_names(insp):
    # 1.4 lists materialized views through get_view_names(include=...).
    if VERSION.startswith("1."):
        return insp.get_view_names(include=("materialized",))
    return insp.get_materialized_view_names()


def plain_view_names(insp):
    if VERSION.startswith("1."):
        return insp.get_view_names(include=("plain",))
    return insp.get_view_names()


def run(dialects, tx_database):
    """The checks over each of `dialects`; `tx_database(name)` makes an empty database for the
    rollback check and returns its DSN."""
    for dialect in dialects:
        engine = sqlalchemy.create_engine(f"postgresql+{dialect}://root@127.0.0.1:{PORT}/dev")
        name = f"sqlalchemy {VERSION}+{dialect}"

        @check(f"{name}: inspect() lists schemas, tables, views and materialized views")
        def _():
            insp = inspect(engine)
            expect("public" in insp.get_schema_names(), True)
            expect(insp.get_table_names(), ["bids"])
            expect(plain_view_names(insp), [])
            expect(materialized_view_names(insp), ["per_auction"])

        @check(f"{name}: inspect() columns of a table")
        def _():
            cols = inspect(engine).get_columns("bids")
            expect(
                [(c["name"], str(c["type"]), c["nullable"]) for c in cols],
                [("auction", "BIGINT", False), ("price", "BIGINT", True), ("channel", "VARCHAR", True), ("ts", "TIMESTAMP", True)],
            )

        @check(f"{name}: inspect() columns of a materialized view")
        def _():
            cols = inspect(engine).get_columns("per_auction")
            # sum(bigint) is numeric; Postgres' view column is an unconstrained NUMERIC, Rivulet's
            # stores the sum's decimal type.
            expect(
                [(c["name"], str(c["type"])) for c in cols],
                [("auction", "BIGINT"), ("n", "BIGINT"), ("total", "NUMERIC(30, 0)")],
            )

        @check(f"{name}: inspect() keys, indexes and constraints are empty, not errors")
        def _():
            insp = inspect(engine)
            for relation in ["bids", "per_auction"]:
                expect(insp.get_pk_constraint(relation)["constrained_columns"], [])
                expect(insp.get_foreign_keys(relation), [])
                expect(insp.get_indexes(relation), [])
                expect(insp.get_unique_constraints(relation), [])
                expect(insp.get_check_constraints(relation), [])
                expect(insp.get_table_comment(relation), {"text": None})

        @check(f"{name}: reflected materialized view queried through SQLAlchemy Core")
        def _():
            view = Table("per_auction", MetaData(), autoload_with=engine)
            with engine.connect() as conn:
                rows = conn.execute(select(view).order_by(view.c.auction)).fetchall()
            expect([tuple(r) for r in rows], PER_AUCTION)

        engine.dispose()

    @check(f"sqlalchemy {VERSION}: Session.rollback() discards the session's writes, commit() keeps them")
    def _():
        db = f"tx_sqlalchemy{VERSION.split('.')[0]}"
        tx_database(db)
        engine = sqlalchemy.create_engine(f"postgresql+{dialects[0]}://root@127.0.0.1:{PORT}/{db}")
        try:
            with Session(engine) as session:
                session.execute(text("INSERT INTO t VALUES (1, 'a')"))
                session.rollback()
                expect(session.execute(text("SELECT count(*) FROM t")).scalar(), 0)
                session.execute(text("INSERT INTO t VALUES (2, 'b')"))
                session.commit()
            with engine.connect() as conn:
                expect(conn.execute(text("SELECT id FROM t")).fetchall(), [(2,)])
        finally:
            engine.dispose()

    @check(f"sqlalchemy {VERSION}: ORM models with serial and identity keys and server defaults")
    def _():
        db = f"orm_sqlalchemy{VERSION.split('.')[0]}"
        tx_database(db)
        engine = sqlalchemy.create_engine(f"postgresql+{dialects[0]}://root@127.0.0.1:{PORT}/{db}")
        Base = declarative_base()

        class Account(Base):
            __tablename__ = "accounts"
            __table_args__ = {"comment": "Customer accounts"}  # COMMENT ON TABLE
            id = Column(Integer, primary_key=True)  # SERIAL, its key read back by RETURNING
            email = Column(String(100), nullable=False, comment="Login address")
            status = Column(String(20), server_default="new")

        class Event(Base):
            __tablename__ = "events"
            id = Column(Integer, Identity(always=True), primary_key=True)
            kind = Column(String, nullable=False)

        try:
            Base.metadata.create_all(engine)
            with Session(engine) as session:
                a, b = Account(email="a@x"), Account(email="b@x", status="vip")
                session.add_all([a, b])
                session.add(Event(kind="signup"))
                session.commit()
                expect((a.id, b.id), (1, 2))
                expect(session.get(Account, 1).status, "new")
                expect(session.execute(select(Event.id, Event.kind)).fetchall(), [(1, "signup")])
                session.add(Account(email="c@x"))
                session.flush()
                session.rollback()
                # A sequence is outside transactions: the rolled-back insert's key stays used.
                session.add(Account(email="d@x"))
                session.commit()
                rows = session.execute(select(Account.id, Account.email).order_by(Account.id))
                expect(rows.fetchall(), [(1, "a@x"), (2, "b@x"), (4, "d@x")])
            cols = {c["name"]: c for c in inspect(engine).get_columns("accounts")}
            expect(cols["id"]["default"], "nextval('accounts_id_seq'::regclass)")
            expect(cols["id"]["autoincrement"], True)
            # Comments, as create_all wrote them with COMMENT ON.
            expect(cols["email"]["comment"], "Login address")
            expect(cols["status"]["comment"], None)
            expect(inspect(engine).get_table_comment("accounts"), {"text": "Customer accounts"})
            # Reflection of the keys and sequences, as from Postgres; a second create_all finds
            # the tables and the explicit sequence and creates nothing.
            insp = inspect(engine)
            expect(insp.get_pk_constraint("accounts")["constrained_columns"], ["id"])
            expect(insp.get_pk_constraint("accounts")["name"], "accounts_pkey")
            expect(insp.get_indexes("accounts"), [])
            expect(insp.has_sequence("accounts_id_seq"), True)
            expect(insp.has_sequence("no_such_seq"), False)
            expect(sorted(insp.get_sequence_names()), ["accounts_id_seq", "events_id_seq"])
            Base.metadata.create_all(engine)
            # drop_all in the driver's transaction (test fixtures, Alembic downgrades): the
            # tables are gone after its COMMIT, and a rolled-back DROP keeps them.
            with engine.connect() as conn:
                tx = conn.begin()
                conn.execute(sqlalchemy.text("DROP TABLE events"))
                tx.rollback()
            expect(inspect(engine).has_table("events"), True)
            Base.metadata.drop_all(engine)
            names = inspect(engine).get_table_names()
            expect([n for n in names if n in ("accounts", "events")], [])
        finally:
            engine.dispose()
