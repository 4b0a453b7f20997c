// node-postgres (`pg`) against a running Rivulet holding the table `bids` and the materialized view
// `per_auction` (see sql-tests/tests/compat_clients.rs). Run as: node clients.js PORT; `pg` is
// resolved through NODE_PATH. Prints one line per check and "N passed, M failed".
'use strict';
const assert = require('assert');
const { Client } = require('pg');

const port = Number(process.argv[2]);
const config = { host: '127.0.0.1', port, user: 'root', database: 'dev' };
const results = [];

async function check(name, fn) {
  const client = new Client(config);
  try {
    await client.connect();
    await fn(client);
    results.push(true);
    console.log(`ok   ${name}`);
  } catch (e) {
    results.push(false);
    console.log(`FAIL ${name}: ${e && e.stack}`);
  } finally {
    await client.end().catch(() => {});
  }
}

async function main() {
  await check('pg: table rows with a parameter (extended protocol)', async (c) => {
    const r = await c.query(
      'SELECT auction, price, channel, ts FROM bids WHERE auction >= $1 ORDER BY auction, price', [1]);
    // int8 arrives as a string in node-postgres, as it does from PostgreSQL.
    assert.deepStrictEqual(r.rows.map((x) => [x.auction, x.price, x.channel]),
      [['1', '10', 'web'], ['1', '30', 'app'], ['2', '20', 'web']]);
    assert.ok(r.rows[0].ts instanceof Date);
    // channel is VARCHAR: varchar (1043) in RowDescription, as PostgreSQL sends it.
    assert.deepStrictEqual(r.fields.map((f) => f.dataTypeID), [20, 20, 1043, 1114]);
  });

  await check('pg: materialized view rows by column name (simple protocol)', async (c) => {
    const r = await c.query('SELECT auction, n, total FROM per_auction ORDER BY auction');
    assert.deepStrictEqual(r.rows, [{ auction: '1', n: '2', total: '40' }, { auction: '2', n: '1', total: '20' }]);
  });

  await check('pg: column names as PostgreSQL gives them', async (c) => {
    const r = await c.query('SELECT count(*), max(price), 1 FROM bids');
    assert.deepStrictEqual(r.fields.map((f) => f.name), ['count', 'max', '?column?']);
    assert.strictEqual(r.rows[0].count, '3');
  });

  await check('pg: named prepared statement reused', async (c) => {
    const q = { name: 'by_auction', text: 'SELECT n FROM per_auction WHERE auction = $1' };
    assert.strictEqual((await c.query({ ...q, values: [1] })).rows[0].n, '2');
    assert.strictEqual((await c.query({ ...q, values: [2] })).rows[0].n, '1');
  });

  await check('pg: several statements in one simple query', async (c) => {
    const r = await c.query('SELECT count(*) FROM bids; SELECT count(*) FROM per_auction');
    assert.deepStrictEqual(r.map((x) => x.rows[0].count), ['3', '2']);
  });

  await check('pg: error SQLSTATE in a transaction, then ROLLBACK recovers', async (c) => {
    await c.query('BEGIN');
    await assert.rejects(c.query('SELECT * FROM no_such_table'), (e) => e.code === '42P01');
    await assert.rejects(c.query('SELECT 1'), (e) => e.code === '25P02');
    await c.query('ROLLBACK');
    assert.strictEqual((await c.query('SELECT count(*) AS n FROM bids')).rows[0].n, '3');
  });

  await check('pg: catalog lookup of the view as a client library does it', async (c) => {
    const r = await c.query(
      `SELECT c.relname, c.relkind FROM pg_catalog.pg_class c
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 ORDER BY c.relname`, ['public']);
    assert.deepStrictEqual(r.rows, [{ relname: 'bids', relkind: 'r' }, { relname: 'per_auction', relkind: 'm' }]);
  });

  await check('pg: literals typed as PostgreSQL types them (int4 is a number, numeric a string)', async (c) => {
    const r = await c.query('SELECT 1 AS one, $1::int + 1 AS two, 0.908 * 13909 AS n, 3000000000 AS big', [1]);
    assert.deepStrictEqual(r.rows, [{ one: 1, two: 2, n: '12629.372', big: '3000000000' }]);
    assert.deepStrictEqual(r.fields.map((f) => f.dataTypeID), [23, 23, 1700, 20]);
  });

  await check('pg: integer overflow is an error, not a wrapped value', async (c) => {
    await assert.rejects(c.query('SELECT $1::int * 2', [2147483647]), (e) => e.code === '22003');
  });

  const passed = results.filter((x) => x).length;
  console.log(`${passed} passed, ${results.length - passed} failed`);
  process.exit(results.length === passed ? 0 : 1);
}

main();
