use super::*;
use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]))
}

fn rows(ids: &[i64], names: &[Option<&str>]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(StringArray::from(names.to_vec())),
        ],
    )
    .unwrap()
}

fn all_rows(t: &TableStore, store: &StateStore) -> RecordBatch {
    let snap = store.snapshot();
    let mut out = Vec::new();
    t.scan(&snap, None, 2, |b| {
        out.push(b);
        Ok(ControlFlow::Continue(()))
    })
    .unwrap();
    concat_batches(&schema(), &out).unwrap()
}

#[test]
fn insert_update_delete_with_primary_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let t = TableStore::open(store.clone(), 7, "users", schema(), vec![0]).unwrap();
    assert_eq!(
        t.insert(&[rows(&[1, 2, 3], &[Some("a"), Some("b"), None])])
            .unwrap(),
        3
    );

    let err = t.insert(&[rows(&[4, 2], &[None, None])]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "duplicate key value violates unique constraint \"users_pkey\""
    );
    assert!(
        matches!(err, EngineError::DuplicateKey { ref key, .. } if key == "(id)=(2)"),
        "{err:?}"
    );

    // UPDATE users SET name = 'x' WHERE id = 1
    let n = t
        .modify::<EngineError>(|b| {
            let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let selected: BooleanArray = ids.iter().map(|v| Some(v == Some(1))).collect();
            let picked = filter_record_batch(b, &selected)?;
            let names = StringArray::from(vec![Some("x"); picked.num_rows()]);
            let replacement = RecordBatch::try_new(
                schema(),
                vec![Arc::clone(picked.column(0)), Arc::new(names)],
            )?;
            Ok(Modification {
                selected,
                replacement: Some(replacement),
            })
        })
        .unwrap();
    assert_eq!(n, 1);
    // DELETE FROM users WHERE id = 2
    let n = t
        .modify::<EngineError>(|b| {
            let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            Ok(Modification {
                selected: ids.iter().map(|v| Some(v == Some(2))).collect(),
                replacement: None,
            })
        })
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(all_rows(&t, &store), rows(&[1, 3], &[Some("x"), None]));

    let log = t.changes_after(None, 0, 100).unwrap();
    let seqs: Vec<u64> = log.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![1, 2, 3], "the failed insert wrote nothing");
    assert_eq!(log[1].1.ops, vec![Op::UpdateBefore, Op::UpdateAfter]);
    assert_eq!(
        log[2].1,
        ChangeBatch {
            data: rows(&[2], &[Some("b")]),
            ops: vec![Op::Delete]
        }
    );
    assert_eq!(t.changes_after(None, 2, 100).unwrap().len(), 1);
    assert_eq!(t.last_seq(), 3);
}

#[test]
fn hidden_row_ids_and_counters_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = StateStore::open(dir.path()).unwrap();
        let t = TableStore::open(store, 1, "bids", schema(), vec![]).unwrap();
        t.insert(&[rows(&[1, 1], &[None, None])]).unwrap();
        t.insert(&[rows(&[1], &[Some("z")])]).unwrap();
    }
    let store = StateStore::open(dir.path()).unwrap();
    let t = TableStore::open(store.clone(), 1, "bids", schema(), vec![]).unwrap();
    assert_eq!(t.last_seq(), 2);
    t.insert(&[rows(&[2], &[None])]).unwrap();
    assert_eq!(
        all_rows(&t, &store),
        rows(&[1, 1, 1, 2], &[None, None, Some("z"), None])
    );
    assert_eq!(t.changes_after(None, 0, 100).unwrap().len(), 3);
}

#[test]
fn not_null_is_enforced_and_drop_removes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let t = TableStore::open(store.clone(), 3, "users", schema(), vec![0]).unwrap();
    let with_null = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![None])),
            Arc::new(StringArray::from(vec![Some("a")])),
        ],
    )
    .unwrap();
    assert!(matches!(
        t.insert(std::slice::from_ref(&with_null)),
        Err(EngineError::NotNull { .. })
    ));
    t.insert(&[rows(&[1], &[None])]).unwrap();
    let mut b = StateBatch::new();
    TableStore::drop_data(&mut b, 3);
    store.write(b, true).unwrap();
    let t = TableStore::open(store.clone(), 3, "users", schema(), vec![0]).unwrap();
    assert_eq!(all_rows(&t, &store).num_rows(), 0);
    assert_eq!(t.last_seq(), 0);
}

#[test]
fn upserts_and_deletes_in_order_with_their_change_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let t = TableStore::open(store.clone(), 9, "users", schema(), vec![0]).unwrap();
    t.insert(&[rows(&[1, 2], &[Some("a"), Some("b")])]).unwrap();
    let mut extra = StateBatch::new();
    extra.put(b"position", b"7");
    // 1 updated twice, 2 deleted, 3 inserted then deleted, 4 inserted, 5 deleted (missing).
    let n = t
        .upsert(
            &rows(
                &[1, 2, 3, 1, 3, 4, 5],
                &[Some("x"), None, Some("c"), Some("y"), None, Some("d"), None],
            ),
            &[false, true, false, false, true, false, true],
            extra,
        )
        .unwrap();
    assert_eq!(n, 6);
    let all = all_rows(&t, &store);
    let ids = all.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
    let names = all
        .column(1)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    let got: Vec<(i64, Option<&str>)> = ids.iter().flatten().zip(names.iter()).collect();
    assert_eq!(got, vec![(1, Some("y")), (4, Some("d"))]);
    assert_eq!(store.get(b"position").unwrap(), Some(b"7".to_vec()));
    let changes = t.changes_after(None, 1, 10).unwrap();
    let ops: Vec<Op> = changes.iter().flat_map(|(_, c)| c.ops.clone()).collect();
    assert_eq!(
        ops,
        vec![
            Op::UpdateBefore,
            Op::UpdateAfter,
            Op::Delete,
            Op::Insert,
            Op::UpdateBefore,
            Op::UpdateAfter,
            Op::Delete,
            Op::Insert,
        ]
    );
    // A missing key deleted alone changes nothing.
    assert_eq!(
        t.upsert(&rows(&[9], &[None]), &[true], StateBatch::new())
            .unwrap(),
        0
    );
}

/// `ON CONFLICT`'s lookup: each proposed row sees the row stored under its key and whether an
/// earlier proposed row has it; what the resolver returns is stored as inserts and updates, in
/// the committed table and in a transaction's staged writes alike.
#[test]
fn inserts_resolving_conflicts_see_the_stored_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let t = TableStore::open(store.clone(), 11, "users", schema(), vec![0]).unwrap();
    t.insert(&[rows(&[1, 2], &[Some("a"), Some("b")])]).unwrap();
    // Keep the free keys' rows and the stored rows of taken ones, renamed: an upsert.
    let n = t
        .insert_resolving::<EngineError>(
            &rows(&[2, 3, 3], &[Some("x"), Some("c"), Some("d")]),
            |proposed, c| {
                assert_eq!(c.found, BooleanArray::from(vec![true, false, false]));
                assert_eq!(c.repeated, BooleanArray::from(vec![false, false, true]));
                let names = c
                    .existing
                    .column(1)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap();
                assert_eq!(
                    names.iter().collect::<Vec<_>>(),
                    vec![Some("b"), None, None]
                );
                let keep = BooleanArray::from(vec![true, true, false]);
                let kept = filter_record_batch(proposed, &keep)?;
                Ok(RecordBatch::try_new(
                    schema(),
                    vec![
                        Arc::clone(kept.column(0)),
                        Arc::new(StringArray::from(vec![Some("b2"), Some("c")])),
                    ],
                )?)
            },
        )
        .unwrap();
    assert_eq!(n, 2);
    let all = all_rows(&t, &store);
    let names = all
        .column(1)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert_eq!(
        names.iter().collect::<Vec<_>>(),
        vec![Some("a"), Some("b2"), Some("c")]
    );
    let changes = t.changes_after(None, 1, 10).unwrap();
    let ops: Vec<Op> = changes.iter().flat_map(|(_, c)| c.ops.clone()).collect();
    assert_eq!(ops, vec![Op::UpdateBefore, Op::UpdateAfter, Op::Insert]);

    // Staged: the transaction's own insert of 4 and delete of 1 are what it sees.
    let mut writes = txn::Writes::default();
    t.stage_insert(&mut writes, &[rows(&[4], &[Some("e")])])
        .unwrap();
    t.stage_modify::<EngineError>(&mut writes, |b| {
        let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        Ok(Modification {
            selected: ids.iter().map(|v| Some(v == Some(1))).collect(),
            replacement: None,
        })
    })
    .unwrap();
    t.stage_insert_resolving::<EngineError>(
        &mut writes,
        &rows(&[1, 4], &[Some("f"), Some("g")]),
        |proposed, c| {
            assert_eq!(c.found, BooleanArray::from(vec![false, true]));
            Ok(proposed.clone())
        },
    )
    .unwrap();
    txn::commit_transaction(vec![(Arc::new(t), writes)]).unwrap();
}

#[test]
fn log_entries_never_split_an_update() {
    let n = SCAN_BATCH_ROWS * 2 + 1;
    // An insert first, then updates: pairs start at odd rows, so a cut at 8192 falls inside one.
    let mut ops = vec![Op::Insert];
    while ops.len() < n {
        ops.extend([Op::UpdateBefore, Op::UpdateAfter]);
    }
    let parts = super::split_ranges(&ops);
    assert_eq!(parts.iter().map(|p| p.1).sum::<usize>(), n);
    for &(start, len) in &parts {
        assert_ne!(ops[start + len - 1], Op::UpdateBefore);
        assert_ne!(ops[start], Op::UpdateAfter);
    }
    assert_eq!(parts[0], (0, SCAN_BATCH_ROWS + 1));
}

#[test]
fn trim_keeps_what_follows_and_a_closed_table_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let t = TableStore::open(store.clone(), 5, "t", schema(), vec![0]).unwrap();
    for i in 0..4 {
        t.insert(&[rows(&[i], &[None])]).unwrap();
    }
    assert!(t.trim(2).unwrap());
    assert_eq!(t.trimmed(), 2);
    assert!(matches!(
        t.changes_after(None, 1, 10),
        Err(EngineError::Trimmed { .. })
    ));
    let kept: Vec<u64> = t
        .changes_after(None, 2, 10)
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(kept, vec![3, 4]);
    assert_eq!(t.log_size().unwrap().0, 2);
    assert_eq!(t.size().rows, 4);
    // Reopened, the trim mark and the sizes are still there.
    let t = TableStore::open(store.clone(), 5, "t", schema(), vec![0]).unwrap();
    assert_eq!(t.trimmed(), 2);
    assert_eq!(t.size().rows, 4);
    t.close();
    assert!(!t.trim(4).unwrap());
    assert_eq!(t.trimmed(), 2);
}
