"""What the Python compatibility scripts share: the server's port from argv, the rows the server holds
(see sql-tests/tests/compat_clients.rs), and the checks' bookkeeping."""

import asyncio
import datetime
import sys
import traceback

PORT = int(sys.argv[1])
DSN = f"host=127.0.0.1 port={PORT} user=root dbname=dev"
URL = f"postgresql://root@127.0.0.1:{PORT}/dev"

BIDS = [
    (1, 10, "web", datetime.datetime(2026, 1, 1, 10, 0, 0)),
    (1, 30, "app", datetime.datetime(2026, 1, 1, 10, 0, 1)),
    (2, 20, "web", datetime.datetime(2026, 1, 1, 10, 0, 2)),
]
PER_AUCTION = [(1, 2, 40), (2, 1, 20)]
BIDS_SQL = "SELECT auction, price, channel, ts FROM bids ORDER BY auction, price"
VIEW_SQL = "SELECT auction, n, total FROM per_auction ORDER BY auction"

results = []


def check(name):
    """Runs the decorated function as one check, recording whether it passed."""

    def run(fn):
        try:
            outcome = fn()
            if asyncio.iscoroutine(outcome):
                asyncio.run(outcome)
            results.append((name, None))
            print(f"ok   {name}", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported, none stops the suite
            results.append((name, e))
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc(limit=3, file=sys.stdout)
        return fn

    return run


def expect(actual, expected):
    if actual != expected:
        raise AssertionError(f"expected {expected!r}, got {actual!r}")


def finish():
    """Prints "N passed, M failed" and exits non-zero if any check failed."""
    passed = sum(1 for _, e in results if e is None)
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
