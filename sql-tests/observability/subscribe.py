"""A psycopg 3 subscriber for the SUBSCRIBE tests: runs a `COPY (SUBSCRIBE ...) TO STDOUT` and
prints each line it receives as a JSON array, flushed at once, so the Rust test sees when each
change arrives.

Usage: subscribe.py PORT QUERY COUNT [PAUSE_SECONDS [MAX_LAG]]
Stops after COUNT lines. With PAUSE_SECONDS it first reads nothing for that long (a slow
client), after setting rivulet.subscribe_max_lag to MAX_LAG. An error ends it with
{"error": SQLSTATE, "message": ...} on the last line.
"""
import json
import sys
import time

import psycopg


def main() -> None:
    port, query, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    pause = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    conn = psycopg.connect(f"host=127.0.0.1 port={port} user=root dbname=dev", autocommit=True)
    if len(sys.argv) > 5:
        conn.execute(f"SET rivulet.subscribe_max_lag = {int(sys.argv[5])}")
    print(json.dumps({"ready": True}), flush=True)
    seen = 0
    try:
        with conn.cursor().copy(query) as copy:
            if pause:
                time.sleep(pause)
            for row in copy.rows():
                print(json.dumps(list(row)), flush=True)
                seen += 1
                if seen >= count:
                    break
    except psycopg.Error as e:
        print(json.dumps({"error": e.sqlstate, "message": str(e)}), flush=True)
    finally:
        # Closing mid-COPY: the server sees the client go away and ends the subscription.
        conn.close()


if __name__ == "__main__":
    main()
