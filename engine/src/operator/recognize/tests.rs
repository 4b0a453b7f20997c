//! The matcher against an independent backtracking matcher over random patterns and streams,
//! with out-of-order rows, late rows, checkpoints, restarts and crashes.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::logical_expr::Operator as BinOp;
use datafusion::physical_plan::PhysicalExpr;
use datafusion::physical_plan::expressions::{BinaryExpr, Column, Literal};
use datafusion::scalar::ScalarValue;

use super::eval::{Anchor, Compiled, Term, TermAgg};
use super::program::Pattern;
use super::*;
use crate::operator::testing::{Epochs, Rng, restored};
use crate::state::StateStore;

const K: usize = 0;
const TS: usize = 1;
const X: usize = 2;
/// A value no condition accepts: the end of each partition's stream.
const STOP: i64 = 9;

fn input() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("ts", DataType::Int64, true),
        Field::new("x", DataType::Int64, true),
    ]))
}

fn col(i: usize) -> Arc<dyn PhysicalExpr> {
    Arc::new(Column::new(&format!("__t{i}"), i))
}

fn lit(v: i64) -> Arc<dyn PhysicalExpr> {
    Arc::new(Literal::new(ScalarValue::Int64(Some(v))))
}

fn bin(l: Arc<dyn PhysicalExpr>, op: BinOp, r: Arc<dyn PhysicalExpr>) -> Arc<dyn PhysicalExpr> {
    Arc::new(BinaryExpr::new(l, op, r))
}

fn compiled(terms: Vec<Term>, expr: Arc<dyn PhysicalExpr>) -> Compiled {
    let schema = Compiled::term_schema(&terms, &input()).expect("terms");
    Compiled {
        terms,
        schema,
        expr,
    }
}

fn current(var: u16, prev: u32) -> Term {
    Term::Row {
        anchor: Anchor::Last,
        var: Some(var),
        offset: 0,
        prev,
        next: 0,
        column: X,
    }
}

/// A: x < 2; B: x >= PREV(x); C: x > COUNT(B.*) (and, if `ahead`, NEXT(x) <> 4); all:
/// x < STOP. D has no condition.
fn defines(ahead: bool) -> Vec<Option<Compiled>> {
    let below_stop = |t: usize| bin(col(t), BinOp::Lt, lit(STOP));
    let mut terms = vec![
        current(2, 0),
        Term::Agg {
            func: TermAgg::Count,
            var: Some(1),
            column: None,
        },
    ];
    let mut c = bin(bin(col(0), BinOp::Gt, col(1)), BinOp::And, below_stop(0));
    if ahead {
        terms.push(Term::Row {
            anchor: Anchor::Last,
            var: Some(2),
            offset: 0,
            prev: 0,
            next: 1,
            column: X,
        });
        c = bin(c, BinOp::And, bin(col(2), BinOp::NotEq, lit(4)));
    }
    vec![
        Some(compiled(
            vec![current(0, 0)],
            bin(bin(col(0), BinOp::Lt, lit(2)), BinOp::And, below_stop(0)),
        )),
        Some(compiled(
            vec![current(1, 0), current(1, 1)],
            bin(bin(col(0), BinOp::GtEq, col(1)), BinOp::And, below_stop(0)),
        )),
        Some(compiled(terms, c)),
        None,
    ]
}

/// The oracle's conditions, written out (`ahead`: C reads the next row too; past the
/// partition's last row it is NULL, so C fails).
fn accepts(var: u16, rows: &[(i64, i64)], i: usize, path: &[(usize, u16)], ahead: bool) -> bool {
    let x = rows[i].1;
    if var == 3 {
        return true;
    }
    if x >= STOP {
        return false;
    }
    match var {
        0 => x < 2,
        1 => i > 0 && x >= rows[i - 1].1,
        _ => {
            x > path.iter().filter(|p| p.1 == 1).count() as i64
                && (!ahead || rows.get(i + 1).is_some_and(|r| r.1 != 4))
        }
    }
}

fn one(term: Term) -> Compiled {
    compiled(vec![term], col(0))
}

fn measures() -> Vec<Compiled> {
    let row = |anchor| Term::Row {
        anchor,
        var: None,
        offset: 0,
        prev: 0,
        next: 0,
        column: TS,
    };
    vec![
        one(row(Anchor::First)),
        one(row(Anchor::Last)),
        one(Term::Agg {
            func: TermAgg::Count,
            var: None,
            column: None,
        }),
        one(Term::MatchNumber),
        one(Term::Classifier),
        one(Term::Agg {
            func: TermAgg::Sum,
            var: Some(1),
            column: Some(X),
        }),
        one(Term::Final(Box::new(row(Anchor::Last)))),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    pattern: Pattern,
    skip: Skip,
    rows: RowsPerMatch,
    within: Option<i64>,
    timeout_rows: bool,
    /// C's condition reads `NEXT(x)`.
    ahead: bool,
}

fn operator(case: &Case) -> Recognize {
    let input = input();
    let mut fields = match case.rows {
        RowsPerMatch::One => vec![Field::new("k", DataType::Int64, true)],
        RowsPerMatch::All => input.fields().iter().map(|f| f.as_ref().clone()).collect(),
    };
    for (name, t) in [
        ("first", DataType::Int64),
        ("last", DataType::Int64),
        ("n", DataType::Int64),
        ("m", DataType::Int64),
        ("cls", DataType::Utf8),
        ("sum_b", DataType::Int64),
        ("final_last", DataType::Int64),
    ] {
        fields.push(Field::new(name, t, true));
    }
    if case.timeout_rows {
        fields.push(Field::new("timed_out", DataType::Boolean, true));
    }
    Recognize::try_new(RecognizeSpec {
        input,
        partition: vec![K],
        time: TS,
        event_time: true,
        vars: ["A", "B", "C", "D"].map(String::from).to_vec(),
        pattern: case.pattern.clone(),
        defines: defines(case.ahead),
        measures: measures(),
        rows: case.rows,
        skip: case.skip,
        within: case.within,
        timeout_rows: case.timeout_rows,
        output: Arc::new(Schema::new(fields)),
    })
    .expect("operator")
}

/// An output row, as compared.
type Out = (i64, i64, Vec<Option<String>>);

fn outputs(case: &Case, batches: Vec<ChangeBatch>, out: &mut Vec<Out>) {
    for b in batches {
        let d = &b.data;
        let lead = match case.rows {
            RowsPerMatch::One => 1,
            RowsPerMatch::All => 3,
        };
        for r in 0..d.num_rows() {
            let text: Vec<Option<String>> = (0..d.num_columns())
                .map(|c| {
                    let a = d.column(c);
                    (!a.is_null(r)).then(|| {
                        datafusion::arrow::util::display::array_value_to_string(a, r)
                            .unwrap_or_default()
                    })
                })
                .collect();
            let k = d.column(0).as_primitive::<Int64Type>().value(r);
            let m = d.column(lead + 3).as_primitive::<Int64Type>().value(r);
            out.push((k, m, text));
        }
    }
}

/// The rows a correct `MATCH_RECOGNIZE` emits for one partition's rows `(ts, x)` in order.
fn oracle_partition(case: &Case, key: i64, rows: &[(i64, i64)], out: &mut Vec<Out>) {
    let ts: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let accepts = |v: u16, i: usize, path: &[(usize, u16)]| accepts(v, rows, i, path, case.ahead);
    let found = super::oracle::matches(
        &case.pattern,
        &ts,
        &accepts,
        case.skip,
        case.within,
        case.timeout_rows,
    );
    for (number, (path, flag)) in found.iter().enumerate() {
        emit(case, key, rows, path, number as i64 + 1, *flag, out);
    }
}

fn emit(
    case: &Case,
    key: i64,
    rows: &[(i64, i64)],
    path: &[(usize, u16)],
    number: i64,
    timed_out: bool,
    out: &mut Vec<Out>,
) {
    let names = ["A", "B", "C", "D"];
    let measures = |upto: usize| -> Vec<Option<String>> {
        let p = &path[..=upto];
        let sum_b: Vec<i64> = p.iter().filter(|r| r.1 == 1).map(|r| rows[r.0].1).collect();
        vec![
            Some(rows[p[0].0].0.to_string()),
            Some(rows[p[p.len() - 1].0].0.to_string()),
            Some(p.len().to_string()),
            Some(number.to_string()),
            Some(names[p[p.len() - 1].1 as usize].to_string()),
            (!sum_b.is_empty()).then(|| sum_b.iter().sum::<i64>().to_string()),
            Some(rows[path[path.len() - 1].0].0.to_string()),
        ]
    };
    match case.rows {
        RowsPerMatch::One => {
            let mut v = vec![Some(key.to_string())];
            v.extend(measures(path.len() - 1));
            if case.timeout_rows {
                v.push(Some(timed_out.to_string()));
            }
            out.push((key, number, v));
        }
        RowsPerMatch::All => {
            for (j, r) in path.iter().enumerate() {
                let mut v = vec![
                    Some(key.to_string()),
                    Some(rows[r.0].0.to_string()),
                    Some(rows[r.0].1.to_string()),
                ];
                v.extend(measures(j));
                out.push((key, number, v));
            }
        }
    }
}

fn random_pattern(rng: &mut Rng, depth: u32, undefined: bool) -> Pattern {
    let vars = if undefined { 4 } else { 3 };
    let var = |rng: &mut Rng| Pattern::Var(rng.below(vars) as u16);
    if depth == 0 {
        return var(rng);
    }
    match rng.below(6) {
        0 | 1 => Pattern::Concat(
            (0..2 + rng.below(2))
                .map(|_| random_pattern(rng, depth - 1, undefined))
                .collect(),
        ),
        2 => Pattern::Alt(
            (0..2)
                .map(|_| random_pattern(rng, depth - 1, undefined))
                .collect(),
        ),
        3 => Pattern::Permute(vec![var(rng), var(rng)]),
        _ => {
            let (min, max) = match rng.below(5) {
                0 => (0, None),
                1 => (1, None),
                2 => (0, Some(1)),
                3 => (2, Some(3)),
                _ => (1, Some(2)),
            };
            let body = random_pattern(rng, depth - 1, undefined);
            let body = if body.nullable() { var(rng) } else { body };
            Pattern::Repeat {
                body: Box::new(body),
                min,
                max,
                greedy: rng.below(3) != 0,
            }
        }
    }
}

type Model = (Vec<(i64, i64, i64)>, Vec<Out>, i64);

fn batch(rows: &[(i64, i64, i64)]) -> ChangeBatch {
    let column = |f: fn(&(i64, i64, i64)) -> i64| {
        Arc::new(rows.iter().map(|r| Some(f(r))).collect::<Int64Array>()) as ArrayRef
    };
    ChangeBatch::inserts(
        RecordBatch::try_new(
            input(),
            vec![column(|r| r.0), column(|r| r.1), column(|r| r.2)],
        )
        .expect("batch"),
    )
}

/// Runs `case` over a random stream; returns how many rows were emitted, and how many of them
/// were timeout rows.
fn check(case: &Case, seed: u64) -> (usize, usize) {
    let dir = tempfile::tempdir().expect("dir");
    let store = StateStore::open(dir.path()).expect("store");
    let scope = StateScope::new(store.clone(), b"mr/", 0..crate::keygroup::KEY_GROUPS);
    let proto = operator(case);
    let mut op = restored(&proto, &scope);
    let mut rng = Rng(seed);
    // Admitted rows (k, ts, x) in arrival order, the output so far, the watermark.
    let mut model: Model = (Vec::new(), Vec::new(), i64::MIN);
    let mut epochs = Epochs::new(store.clone(), &model);
    let mut clock = 0;
    for _ in 0..60 {
        let n = 1 + rng.below(6);
        let mut rows = Vec::new();
        for _ in 0..n {
            clock += rng.below(3) as i64;
            let ts = clock - rng.below(4) as i64;
            rows.push((rng.below(3) as i64, ts, rng.below(5) as i64));
        }
        let (admitted, out, watermark) = &mut model;
        admitted.extend(rows.iter().filter(|r| r.1 >= *watermark));
        outputs(case, op.process(0, batch(&rows)).expect("process"), out);
        if rng.below(2) == 0 {
            *watermark = (*watermark).max(clock - 3);
            outputs(
                case,
                op.on_watermark(0, *watermark).expect("watermark"),
                out,
            );
        }
        epochs.step(&mut rng, &proto, &scope, &mut op, &mut model);
        // The runtime gives a restored operator its watermark again.
        let (_, out, watermark) = &mut model;
        outputs(
            case,
            op.on_watermark(0, *watermark).expect("watermark"),
            out,
        );
    }
    // The end: a row no condition accepts in each partition, then the watermark past all.
    let (admitted, out, _) = &mut model;
    // With NEXT a row is matched once the row after it came: two stops.
    let stops: Vec<(i64, i64, i64)> = (0..3)
        .flat_map(|k| vec![(k, clock + 1000, STOP); 1 + usize::from(case.ahead)])
        .collect();
    admitted.extend(&stops);
    outputs(case, op.process(0, batch(&stops)).expect("process"), out);
    outputs(case, op.on_watermark(0, i64::MAX).expect("watermark"), out);
    let mut expected = Vec::new();
    for key in 0..3 {
        let mut rows: Vec<(usize, i64, i64)> = admitted
            .iter()
            .enumerate()
            .filter(|(_, r)| r.0 == key)
            .map(|(i, r)| (i, r.1, r.2))
            .collect();
        rows.sort_by_key(|r| (r.1, r.0));
        let rows: Vec<(i64, i64)> = rows.iter().map(|r| (r.1, r.2)).collect();
        oracle_partition(case, key, &rows, &mut expected);
    }
    let mut got = out.clone();
    got.sort_by_key(|a| (a.0, a.1));
    expected.sort_by_key(|a| (a.0, a.1));
    assert_eq!(
        got,
        expected,
        "seed {seed}, pattern {}",
        case.pattern.sql(&["A", "B", "C", "D"].map(String::from))
    );
    let timeouts = got
        .iter()
        .filter(|r| r.2.last() == Some(&Some("true".to_string())))
        .count();
    (got.len(), timeouts)
}

#[test]
fn random_patterns_match_the_backtracking_oracle() {
    let mut rng = Rng(0x5eed);
    let (mut rows_out, mut timeouts, mut matched, mut anchored, mut ahead) = (0, 0, 0, 0, 0);
    for round in 0..120u64 {
        let within = (round % 3 == 0).then_some(6);
        let mut pattern = || loop {
            let p = random_pattern(&mut rng, 2, within.is_some());
            if !p.nullable() {
                break p;
            }
        };
        // Some patterns anchored at the partition's start (`^ p`, `(^ p | q)`).
        let pattern = match round % 8 {
            3 => Pattern::Concat(vec![Pattern::Start, pattern()]),
            6 => Pattern::Alt(vec![
                Pattern::Concat(vec![Pattern::Start, pattern()]),
                pattern(),
            ]),
            _ => pattern(),
        };
        let skip = match rng.below(4) {
            0 => Skip::PastLastRow,
            1 => Skip::ToNextRow,
            2 => Skip::ToFirst(rng.below(3) as u16),
            _ => Skip::ToLast(rng.below(3) as u16),
        };
        let rows = if rng.below(3) == 0 {
            RowsPerMatch::All
        } else {
            RowsPerMatch::One
        };
        let case = Case {
            pattern,
            skip,
            rows,
            within,
            timeout_rows: within.is_some() && rows == RowsPerMatch::One && rng.below(2) == 0,
            // NEXT is refused with WITHIN.
            ahead: within.is_none() && round % 4 == 1,
        };
        let (n, t) = check(&case, round * 7919 + 1);
        rows_out += n;
        timeouts += t;
        matched += usize::from(n > t);
        anchored += usize::from(n > t && round % 8 == 3);
        ahead += usize::from(n > t && case.ahead);
    }
    // Not vacuous: most cases emit matches, and timeouts happen.
    assert!(matched > 80, "{matched} of 120 cases emitted a match");
    assert!(
        anchored > 5,
        "{anchored} of 15 patterns anchored with ^ emitted a match"
    );
    assert!(
        ahead > 10,
        "{ahead} of 20 cases reading NEXT emitted a match"
    );
    assert!(
        rows_out > 2000 && timeouts > 50,
        "{rows_out} rows, {timeouts} timeouts"
    );
}

/// Keys under the operator's scope in the store.
fn stored_entries(store: &StateStore) -> usize {
    let mut n = 0;
    store
        .scan_prefix(None, b"mr/", None, |_, _| {
            n += 1;
            Ok(ControlFlow::Continue(()))
        })
        .expect("scan");
    n
}

/// `PATTERN (A B)`, A: x < 2, B: x > A.x; one row per match with the first row's time, and
/// `MATCH_NUMBER()` too if `numbered`.
fn pair_operator(numbered: bool) -> Recognize {
    let first = one(Term::Row {
        anchor: Anchor::First,
        var: None,
        offset: 0,
        prev: 0,
        next: 0,
        column: TS,
    });
    let mut measures = vec![first];
    let mut fields = vec![
        Field::new("k", DataType::Int64, true),
        Field::new("first", DataType::Int64, true),
    ];
    if numbered {
        measures.push(one(Term::MatchNumber));
        fields.push(Field::new("m", DataType::Int64, true));
    }
    let last_a = Term::Row {
        anchor: Anchor::Last,
        var: Some(0),
        offset: 0,
        prev: 0,
        next: 0,
        column: X,
    };
    Recognize::try_new(RecognizeSpec {
        input: input(),
        partition: vec![K],
        time: TS,
        event_time: true,
        vars: ["A", "B"].map(String::from).to_vec(),
        pattern: Pattern::Concat(vec![Pattern::Var(0), Pattern::Var(1)]),
        defines: vec![
            Some(compiled(
                vec![current(0, 0)],
                bin(col(0), BinOp::Lt, lit(2)),
            )),
            Some(compiled(
                vec![current(1, 0), last_a],
                bin(col(0), BinOp::Gt, col(1)),
            )),
        ],
        measures,
        rows: RowsPerMatch::One,
        skip: Skip::PastLastRow,
        within: Some(10),
        timeout_rows: false,
        output: Arc::new(Schema::new(fields)),
    })
    .expect("operator")
}

#[test]
fn partitions_done_with_leave_no_state_unless_match_numbers_go_on() {
    for numbered in [false, true] {
        let dir = tempfile::tempdir().expect("dir");
        let store = StateStore::open(dir.path()).expect("store");
        let scope = StateScope::new(store.clone(), b"mr/", 0..crate::keygroup::KEY_GROUPS);
        let proto = pair_operator(numbered);
        let mut op = restored(&proto, &scope);
        let mut matches = 0;
        // 500 partitions, each a match (x 0 then 1) and an attempt that times out (x 0 alone),
        // over two rounds: partitions come back after they were forgotten.
        for round in 0..2i64 {
            let t = round * 100;
            let rows: Vec<(i64, i64, i64)> = (0..500)
                .flat_map(|k| [(k, t, 0), (k, t + 1, 1), (k, t + 2, 0)])
                .collect();
            op.process(0, batch(&rows)).expect("process");
            for b in op.on_watermark(0, t + 50).expect("watermark") {
                matches += b.data.num_rows();
                if numbered {
                    let m = b.data.column(2).as_primitive::<Int64Type>();
                    assert!(m.iter().all(|v| v == Some(round + 1)), "{m:?}");
                }
            }
            crate::operator::testing::commit(op.as_mut(), &scope, round as u64 + 1);
            let left = stored_entries(&store);
            if numbered {
                assert_eq!(left, 500, "round {round}: one counter entry per partition");
            } else {
                assert_eq!(left, 0, "round {round}: nothing kept");
            }
            // A restart reads nothing back that would emit again.
            op = restored(&proto, &scope);
            assert!(op.on_watermark(0, t + 60).expect("watermark").is_empty());
        }
        assert_eq!(matches, 1000);
    }
}
