-- Expressions, formats and catalog queries run on both Rivulet and a real PostgreSQL by
-- tests/pg_compat.rs, which compares their result types, text values and binary values; what
-- differs is listed in differences.txt. One statement per line; `--` lines are comments. The
-- setup statements (up to the line `-- queries`) run first on both.
CREATE TABLE t (id int, s smallint, i int, b bigint, n numeric(10,2), u numeric, f double precision, r real, tx text, v varchar(10), d date, ts timestamp, tz timestamptz, iv interval, bo boolean)
INSERT INTO t VALUES (1, 1, 10, 100, 2.50, 1.25, 0.5, 1.5, 'abc', 'x', '2024-03-05', '2024-03-05 10:11:12.345678', '2024-03-05 10:11:12+00', '1 day 2 hours 3 minutes 4 seconds', true)
INSERT INTO t VALUES (2, -2, -20, 3000000000, -3.75, 10, -1.25, 2.25, 'Hello World', 'yy', '2023-12-31', '2023-12-31 23:59:59', '2023-12-31 23:59:59+00', '-3 hours', false)
INSERT INTO t VALUES (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
CREATE TABLE tj (id int, j jsonb, js json)
INSERT INTO tj VALUES (1, '{"a": {"b": [1, 2]}, "s": "x"}', '{"a": {"b":  [1, 2]},  "s": "x"}')
CREATE TABLE tc (c char(4), v varchar(4))
INSERT INTO tc VALUES ('ab', 'ab')
CREATE TABLE tb (id int, b bpchar, c char)
INSERT INTO tb VALUES (1, 'ab  ', 'x'), (2, 'ab', 'y ')
CREATE TABLE big (x numeric(38,0))
INSERT INTO big VALUES (99999999999999999999999999999999999999), (99999999999999999999999999999999999999)
CREATE TABLE tu (id uuid, n int)
INSERT INTO tu VALUES ('A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', 1), ('{b0eebc999c0b4ef8bb6d6bb9bd380a12}', 2), (NULL, 3)
-- queries
-- Literals and their types.
SELECT 1
SELECT -2147483648, 2147483648, 9223372036854775807
SELECT 1.5, 0.908 * 13909, 1e3, 1.0E-2
SELECT 'text', NULL, true, false
SELECT pg_typeof(1), pg_typeof(1.5), pg_typeof('a'), pg_typeof(1::int8), pg_typeof(now())
-- Arithmetic and its result types.
SELECT 1 + 1, 7 / 2, 7 % 3, -7 / 2, -7 % 3, 2 * 3
SELECT 7 / 2.0, 1 / 3.0, 10::numeric / 4
SELECT -3.75 / 3, 3.0 / 3, 0.001 / 7, 123456789.123 / 7, 1.50::numeric(10,2) / 3, (-3.75 / 3) * 2
SELECT 2147483647 + 1
SELECT 9223372036854775807 + 1
SELECT 1 / 0
SELECT 1.5 / 0
SELECT s + 1, i + 1, b + 1, n + 1, u + 1, f + 1, r + 1 FROM t ORDER BY id
SELECT s * i, i * b, n * 2, u * n, f * n FROM t ORDER BY id
SELECT i / 3, b / 7, n / 3, f / 3 FROM t ORDER BY id
SELECT '1' + 1, i * '2', n + '0.125', r - 1, r * n FROM t ORDER BY id
SELECT -s, -i, -b, -n, abs(i), abs(n) FROM t ORDER BY id
-- NUMERIC.
SELECT 1.25::numeric, 1.250::numeric, 2.5::numeric(10,2), 12345.678::numeric(10,1)
SELECT 'NaN'::numeric
SELECT '1e5'::numeric, '-0.000'::numeric
SELECT 1000::numeric(3,0)
SELECT 123.45::numeric(4,2)
SELECT n::numeric(2,1) FROM t ORDER BY id
SELECT 'Infinity'::float8::numeric
SELECT sum(x) FROM big
SELECT sum(x) FROM big GROUP BY x
SELECT sum(x) FILTER (WHERE x < 0), sum(x - x), sum(x) FILTER (WHERE x > 0) FROM big
SELECT u, n FROM t ORDER BY id
SELECT sum(n), sum(u), avg(n), min(n), max(u) FROM t
SELECT round(2.5), round(-2.5), round(1.2345, 2), trunc(1.999, 1), ceil(1.2), floor(-1.2)
SELECT round(n, 1), round(f), ceil(f), floor(f) FROM t ORDER BY id
-- Aggregates and their types.
SELECT count(*), count(i), sum(s), sum(i), sum(b), sum(f), avg(s), avg(i), avg(b), avg(f) FROM t
SELECT min(tx), max(tx), min(d), max(ts), bool_and(bo), bool_or(bo) FROM t
SELECT string_agg(tx, ',' ORDER BY tx) FROM t
-- Text.
SELECT upper(tx), lower(tx), length(tx), char_length(v), octet_length(tx) FROM t ORDER BY id
SELECT substr(tx, 2, 3), substring(tx from 2 for 3), left(tx, 2), right(tx, 2) FROM t ORDER BY id
SELECT position('l' in tx), strpos(tx, 'o'), replace(tx, 'l', 'L'), split_part(tx, ' ', 2) FROM t ORDER BY id
SELECT concat(tx, '-', i), concat_ws('/', tx, v, i), tx || '!', lpad(v, 5, '*'), rpad(v, 5) FROM t ORDER BY id
SELECT trim('  x  '), ltrim('xxa', 'x'), rtrim('axx', 'x'), btrim('xax', 'x'), repeat('ab', 3), reverse('abc')
SELECT initcap('hello world'), md5('abc'), ascii('A'), chr(66), starts_with('abc', 'ab')
SELECT 'abc' LIKE 'a%', 'abc' ILIKE 'A%', 'abc' ~ '^a', regexp_replace('a1b2', '[0-9]', '#', 'g')
SELECT format('%s-%s', 'a', 1), quote_ident('My Col'), quote_literal('it''s')
-- Booleans and NULLs.
SELECT bo, NOT bo, bo AND true, bo OR NULL, bo IS TRUE, bo IS NOT FALSE FROM t ORDER BY id
SELECT coalesce(i, 0), nullif(i, 10), greatest(1, 2, NULL), least(1, 2) FROM t ORDER BY id
SELECT CASE WHEN i > 0 THEN 'pos' WHEN i < 0 THEN 'neg' ELSE 'none' END FROM t ORDER BY id
-- Casts.
SELECT '12'::int, '12'::bigint, '1.5'::float8, '1.5'::real, 'true'::boolean, '2024-01-02'::date
SELECT 12::text, 1.5::text, true::text, now()::date IS NOT NULL
SELECT 'abc'::int
SELECT '2024-13-01'::date
SELECT 3.7::int, (-3.5)::int, 2.5::bigint, 1e10::int
SELECT CAST(i AS text), CAST(n AS int), CAST(f AS numeric(10,3)), CAST(b AS int) FROM t WHERE id = 1
-- Dates, times, intervals.
SELECT DATE '2024-03-05', TIME '10:11:12', TIMESTAMP '2024-03-05 10:11:12', TIMESTAMP '2024-03-05 10:00'
SELECT TIMESTAMPTZ '2024-03-05 10:11:12+02', INTERVAL '1 day', INTERVAL '90 minutes', INTERVAL '1 year 2 months'
SELECT d + 1, d - 1, d + INTERVAL '1 month', ts + iv, tz - INTERVAL '1 hour', ts - TIMESTAMP '2020-01-01' FROM t ORDER BY id
SELECT '1 day 02:03:04'::interval, '-1 year -2 mons +3 days -04:05:06.5'::interval, '10:00'::interval, 'P1DT2H'::interval
SELECT DATE '2024-03-05' - DATE '2024-01-01', TIMESTAMP '2024-03-05' - TIMESTAMP '2024-03-04 12:00'
SELECT TIMESTAMP '2020-01-01' - ts, tz - TIMESTAMPTZ '2024-03-05 00:00:00+00' FROM t ORDER BY id
SELECT INTERVAL '1 day' * 2, INTERVAL '1 hour' / 4, INTERVAL '1 day' + INTERVAL '3 hours', -INTERVAL '2 days'
SELECT extract(year from ts), extract(month from ts), extract(day from ts), extract(hour from ts), extract(minute from ts), extract(second from ts) FROM t ORDER BY id
SELECT extract(dow from d), extract(isodow from d), extract(doy from d), extract(week from d), extract(quarter from d), extract(epoch from ts) FROM t ORDER BY id
SELECT extract(millisecond from ts), extract(microsecond from ts), extract(century from d), extract(decade from d), extract(isoyear from d) FROM t ORDER BY id
SELECT date_part('year', ts), date_part('epoch', tz), date_part('day', iv), extract(epoch from iv) FROM t ORDER BY id
SELECT date_trunc('year', ts), date_trunc('quarter', ts), date_trunc('month', ts), date_trunc('week', ts) FROM t ORDER BY id
SELECT date_trunc('day', ts), date_trunc('hour', ts), date_trunc('minute', ts), date_trunc('second', ts), date_trunc('millisecond', ts) FROM t ORDER BY id
SELECT date_trunc('hour', tz), date_trunc('day', iv) FROM t ORDER BY id
SELECT date_trunc('month', INTERVAL '1 year 5 mons 3 days'), date_trunc('quarter', INTERVAL '1 year 5 mons'), date_trunc('minute', INTERVAL '-90.5 seconds')
SELECT make_date(2024, 2, 29), make_time(10, 11, 12.5), make_timestamp(2024, 1, 2, 3, 4, 5.5), make_interval(days => 3)
SELECT age(TIMESTAMP '2026-03-31 10:00', TIMESTAMP '2025-01-31 12:30'), justify_days(INTERVAL '45 days'), justify_hours(INTERVAL '50 hours'), justify_interval(INTERVAL '1 month -1 hour')
SELECT to_timestamp(0), to_timestamp(1700000000.5)
SELECT now() - now(), current_date - current_date, pg_typeof(now()), pg_typeof(current_timestamp), pg_typeof(localtimestamp)
SELECT tz AT TIME ZONE 'UTC', ts AT TIME ZONE 'UTC' FROM t ORDER BY id
SELECT TIMESTAMPTZ '2024-03-05 10:00:00+00' AT TIME ZONE 'Europe/Paris', TIMESTAMP '2024-03-05 10:00' AT TIME ZONE 'Europe/Paris', TIMESTAMPTZ '2024-07-01 10:00:00+00' AT TIME ZONE 'Europe/Paris', TIMESTAMP '2024-03-05 10:00' AT TIME ZONE 'America/New_York'
SELECT now() AT TIME ZONE 'Mars/Base'
SELECT TIMESTAMP '2024-03-05 10:00' AT TIME ZONE '+02:00'
-- Formatting functions.
SELECT to_char(ts, 'YYYY-MM-DD HH24:MI:SS'), to_char(ts, 'DD Mon YYYY HH12:MI AM'), to_char(ts, 'Day, Month FMDD') FROM t ORDER BY id
SELECT to_char(ts, 'YYYY-MM-DD"T"HH24:MI:SS.MS'), to_char(ts, 'US'), to_char(ts, 'Q WW IW DDD D J') FROM t ORDER BY id
SELECT to_char(d, 'FMMonth FMDDth, YYYY'), to_char(d, 'dy mon yy'), to_char(tz, 'YYYY-MM-DD HH24:MI TZ') FROM t ORDER BY id
SELECT to_char(iv, 'HH24:MI:SS'), to_char(iv, 'DD "days" HH24 "hours"') FROM t ORDER BY id
SELECT to_char(INTERVAL '30 hours 5 minutes', 'HH24:MI'), to_char(INTERVAL '1 year 2 months 3 days', 'YYYY-MM-DD'), to_char(INTERVAL '1.5 seconds', 'SS.MS'), to_char(INTERVAL '-04:05:06', 'HH24:MI:SS'), to_char(INTERVAL '13 hours', 'HH12 AM')
SELECT to_char(1234.5, '9,999.99'), to_char(-1234.5, '9G999D99S'), to_char(0.5, '0.00'), to_char(42, '000099'), to_char(-7, '999PR')
SELECT to_char(n, 'FM999.00'), to_char(i, '9999'), to_char(f, '9.999EEEE') FROM t ORDER BY id
SELECT to_date('05 Mar 2024', 'DD Mon YYYY'), to_timestamp('2024-03-05 10:11', 'YYYY-MM-DD HH24:MI'), to_number('1,234.50', '9G999D99'), to_number('(12)', '99PR')
SELECT to_number('<12>', '99PR'), to_number('12', '99PR'), to_number(' <7>', '9PR'), to_number('<1,234.5>', '9G999D9PR'), to_number('-12', '99PR')
SELECT to_number('12,454.8-', '99G999D9S'), to_number('  $42', 'FM9999'), to_number('12 34', '99 99'), to_number('x12', '999'), to_number('$1,234', 'L9,999')
SELECT to_number('1234.5', '9.99')
SELECT to_number('12', '99V9'), to_number('1234', '99V99'), to_number('-12', 'S99V9'), to_number('5', '9V'), to_number('1,234', '9,999V9')
SELECT to_number('1.2', '9.9V9')
-- Table functions.
SELECT * FROM generate_series(1, 3)
SELECT g FROM generate_series(1, 3) g
SELECT x FROM generate_series(1, 3) AS g(x)
SELECT * FROM generate_series(TIMESTAMP '2024-01-01', TIMESTAMP '2024-01-01 02:00', INTERVAL '1 hour')
SELECT * FROM unnest(ARRAY[1, 2]) AS u(x)
SELECT ARRAY[1, 2, 3], array_length(ARRAY[1, 2, 3], 1), (ARRAY['a', 'b'])[2], cardinality(ARRAY[1, 2])
-- JSON.
SELECT '{"a": {"b": [1, 2]}, "s": "x"}'::jsonb -> 'a', '{"s": "x"}'::jsonb ->> 's', '{"a": [1, 2]}'::jsonb #>> '{a,1}'
SELECT j, j -> 'a', j ->> 's', j #> '{a,b}', j #>> '{a,b,0}' FROM tj
SELECT js, js -> 'a', js ->> 's', js #> '{a,b}', pg_typeof(js), pg_typeof(js -> 'a') FROM tj
SELECT c, v, c || '|', length(c), pg_typeof(c), c = 'ab  ' FROM tc
SELECT jsonb_array_length('[1, 2, 3]'::jsonb), '{"a": 1}'::jsonb ? 'a', jsonb_extract_path_text('{"a": {"b": 3}}'::jsonb, 'a', 'b')
SELECT '[1,2]'::json, '[1,2]'::jsonb, '{"a": [1,2]}'::jsonb -> 'a', '{"a": [1,2]}'::json -> 'a', '[1, [2]]'::jsonb -> 1
SELECT '{"b":1, "a":  [1,2]}'::jsonb, '{"b":1, "a":  [1,2]}'::json, '{"a": 1, "a": 2}'::jsonb, '{"aa": 1, "b": 2, "a": 3}'::jsonb
SELECT '[1e2, -0, 1.50, 1.5E-3, "\u0041\n"]'::jsonb, '{"a": {"y": 1, "x": [{}]}}'::jsonb ->> 'a', '"x"'::jsonb, 'null'::jsonb
SELECT json_build_object('a', 1, 'b', 'x'), json_build_object()
SELECT 'abc'::jsonb
SELECT '[1,]'::json
SELECT '{"a":1,}'::json
SELECT '"\u0000"'::json, '1e1000000'::json
INSERT INTO tj VALUES (2, '"\u0000"', NULL)
INSERT INTO tj VALUES (2, '1e1000000', NULL)
INSERT INTO tj VALUES (2, NULL, '[1 2]')
-- bpchar: blanks kept without a length, padded to one.
SELECT 'ab '::bpchar, CAST('ab ' AS bpchar), 'ab '::char(4), 'ab '::bpchar || '|', 'ab '::bpchar = 'ab', length('ab '::bpchar)
SELECT b, c, b || '|', c || '|', b = 'ab', pg_typeof(b) FROM tb ORDER BY id
SELECT c, v, c || '|', 'abc'::char(2), 'a'::char(3), 'x'::character, CAST('xyz' AS character(2)) FROM tc
SELECT 'a'::char(3)::text, pg_typeof('a'::char(3))::text, length('a  '::char(3)), 123::char(2)
SELECT 'a'::char(0)
-- Session and catalog.
SELECT current_user = session_user, current_schema(), current_setting('DateStyle'), current_setting('TimeZone')
SELECT 't'::regclass::oid > 0, pg_typeof('t'::regclass)
SELECT 'nope'::regclass
SELECT typname, typlen FROM pg_type WHERE typname IN ('int4', 'int8', 'numeric', 'text', 'bool', 'timestamp', 'timestamptz', 'date', 'interval') ORDER BY typname
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 't'::regclass AND attnum > 0 ORDER BY attnum
SELECT column_name, data_type, numeric_precision, numeric_scale, is_nullable FROM information_schema.columns WHERE table_name = 't' ORDER BY ordinal_position
SELECT relname, relkind FROM pg_class WHERE relname = 't'
SELECT nspname, current_schema(), pg_typeof(current_user), pg_typeof(current_database()), pg_typeof(current_catalog) FROM pg_namespace WHERE nspname = 'public'
SELECT attname, attidentity, attgenerated FROM pg_attribute WHERE attrelid = 't'::regclass AND attnum = 1
SELECT typname, typtype, typcategory FROM pg_type WHERE typname = 'int4'
SELECT pg_catalog.format_type(23, NULL), pg_catalog.format_type(1700, 655366)
SELECT has_table_privilege('t', 'SELECT'), pg_table_is_visible('t'::regclass)
SELECT count(*) > 0 FROM pg_catalog.pg_namespace WHERE nspname IN ('pg_catalog', 'public', 'information_schema')
SHOW TimeZone
SHOW server_version_num
SHOW standard_conforming_strings
-- Errors and their SQLSTATEs.
INSERT INTO tc VALUES ('a', 'b', 'c')
INSERT INTO tc (c) VALUES ('a', 'b')
INSERT INTO tc (c, v) VALUES ('a')
INSERT INTO tc VALUES ('a', 'b'), ('a', 'b', 'c')
INSERT INTO tc (c) SELECT 'a', 'b'
INSERT INTO tc (c, v) SELECT 'a'
SELECT * FROM no_such_table
SELECT no_such_column FROM t
SELECT no_such_function(1)
SELECT 1 +
SELECT 'a' + 1
SELECT i FROM t GROUP BY id
SELECT t.zz FROM t
SELECT id FROM t WHERE tx > 'x' AND nope = 1
SELECT conut(*) FROM t
SELECT id FROM t WHERE d > '2024-02-30'
SELECT tb.b FROM tb JOIN no_such_table x ON true
INSERT INTO tj SELECT 2, '{"a":1}'::text, NULL
SELECT b, count(*) FROM tb GROUP BY b
SELECT DISTINCT b FROM tb
SELECT count(*) FROM tb x JOIN tb y ON x.b = y.b
SELECT min(b), max(b) FROM tb
SELECT (SELECT j FROM tj LIMIT 1), (SELECT v FROM t WHERE id = 1), (SELECT n FROM t WHERE id = 1)
SELECT id, (SELECT v FROM t t2 WHERE t2.id = t.id + 1) AS nxt, (SELECT j FROM tj WHERE tj.id = t.id) FROM t ORDER BY id
SELECT id, (SELECT x.v FROM t x WHERE x.id = t.id ORDER BY x.ts DESC LIMIT 1) AS last FROM t ORDER BY id
SELECT (SELECT id FROM t WHERE id > 1)
SELECT id, (SELECT id FROM tb WHERE tb.id >= t.id) FROM t
-- uuid: text and binary forms, input forms, comparisons with literals, errors.
SELECT id, n FROM tu ORDER BY n
SELECT n FROM tu WHERE id = 'B0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A12'
SELECT 'a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11'::uuid, pg_typeof('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid)
SELECT 'nope'::uuid
INSERT INTO tu VALUES ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1', 4)
SELECT length(gen_random_uuid()::text), substr(gen_random_uuid()::text, 15, 1)
SELECT column_name, data_type, udt_name FROM information_schema.columns WHERE table_name = 'tu' ORDER BY ordinal_position
