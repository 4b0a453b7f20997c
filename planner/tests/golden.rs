//! Golden tests of the streaming planner: SQL in, EXPLAIN text (or the error) out.
//!
//! Each `tests/golden/<case>.sql` is a script of statements run in order against a catalog of
//! its own (a temporary RocksDB store holds the tables' `TableStore`s, which stay empty):
//! - `CREATE TABLE` / `CREATE SOURCE` define relations (their watermarks, keys, `APPEND ONLY`
//!   and `PROCTIME()` columns as the server reads them); they print nothing unless they fail;
//! - `SET streaming_parallelism = n`, `SET 'table.exec.state.ttl' = '..'` and
//!   `SET 'table.exec.emit.allow-lateness' = '..'` shape the views planned after them
//!   (parallelism is 4 until set); `RESET` sets one back;
//! - `CREATE MATERIALIZED VIEW` prints the view's plan and registers the view, so later views can
//!   read it; `EXPLAIN CREATE MATERIALIZED VIEW` prints the plan only; `CREATE SINK ... AS`
//!   prints a sink's plan.
//!
//! A view's plan is the text `EXPLAIN CREATE MATERIALIZED VIEW` returns (`StreamPlan::explain`);
//! a refused one prints `ERROR <SQLSTATE>: <message>` and its hint. The output is compared with
//! `tests/golden/<case>.out`; `RIVULET_GOLDEN_UPDATE=1 cargo test -p rivulet-planner --test
//! golden` rewrites the expected files instead, for review in the diff.
//!
//! The view's query goes through the planner's steps as `server/src/jobs.rs` (`plan_stream`) and
//! `server/src/exec/query.rs` (`plan_continuous`) call them: the query printed back and parsed
//! again, `recursive::check`, `recognize::prepare`, DataFusion's SQL planner, `temporal::tables`,
//! `stream::plan_view`; between the last two, the server's Postgres typing of literals and
//! averages, mirrored here ([`postgres_types`]). The server's other rewrites (text casts of
//! constants, rounding casts) and its Postgres functions (`pg_*`, JSON operators) live in
//! `server/` and are not applied: a case needing them plans differently here, so cases avoid
//! them.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ScalarValue, TableReference};
use datafusion::datasource::empty::EmptyTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::expr::Cast;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan, Union};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast;
use rivulet_engine::state::StateStore;
use rivulet_engine::table::TableStore;
use rivulet_planner::PlanError;
use rivulet_planner::catalog::{TableDef, WatermarkDef};
use rivulet_planner::parse::{Statement, parse_sql};
use rivulet_planner::stream::{COUNT_COLUMN, Resolved, StreamContext, StreamPlan, plan_view};

/// The environment variable that makes the tests write the expected files.
const UPDATE: &str = "RIVULET_GOLDEN_UPDATE";
/// Instances of keyed stages until a case sets `streaming_parallelism`.
const PARALLELISM: usize = 4;

#[test]
fn golden() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases in {}", dir.display());
    let update = std::env::var_os(UPDATE).is_some_and(|v| !v.is_empty() && v != "0");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut failed = Vec::new();
    for case in &cases {
        // Shown with a panic of the harness (a statement it cannot run), to name the case.
        println!("golden case {}", case.display());
        let sql = std::fs::read_to_string(case).unwrap();
        let actual = runtime.block_on(run_case(&sql));
        let expected_path = case.with_extension("out");
        if update {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failed.push(format!(
                "{}:\n{}",
                expected_path.display(),
                diff(&expected, &actual)
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} golden cases differ (rerun with {UPDATE}=1 to accept the new output, then \
         review the diff):\n\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}

/// A line diff of `expected` and `actual`: `-` lines only expected, `+` lines only produced,
/// with two lines of context around each change.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    // Longest common subsequence, by dynamic programming (files are a few hundred lines).
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    let near_change = |k: usize| {
        let lo = k.saturating_sub(2);
        let hi = (k + 3).min(ops.len());
        ops[lo..hi].iter().any(|(op, _)| *op != ' ')
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (op, line)) in ops.iter().enumerate() {
        if near_change(k) {
            if skipped {
                out.push_str("  ...\n");
                skipped = false;
            }
            let _ = writeln!(out, "{op} {line}");
        } else {
            skipped = true;
        }
    }
    out
}

/// A relation of a case's catalog, as the planner resolves it.
struct Relation {
    store: Arc<TableStore>,
    key: Option<Vec<usize>>,
    watermark: Option<WatermarkDef>,
    idle_timeout: Option<std::time::Duration>,
    append_only: bool,
    processing_time: bool,
}

/// One case's catalog and session.
struct Case {
    ctx: SessionContext,
    store: StateStore,
    _dir: tempfile::TempDir,
    relations: BTreeMap<String, Relation>,
    settings: BTreeMap<String, String>,
    next_id: u64,
}

async fn run_case(sql: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let mut case = Case {
        ctx: context(),
        store,
        _dir: dir,
        relations: BTreeMap::new(),
        settings: BTreeMap::new(),
        next_id: 1,
    };
    let mut out = String::new();
    let parsed = match parse_sql(sql) {
        Ok(parsed) => parsed,
        Err(e) => return format!("{}\n", error_text(&e)),
    };
    for statement in parsed {
        let text = statement_text(&statement.text);
        match case.run(&statement.statement).await {
            Ok(None) => {}
            Ok(Some(lines)) => {
                let _ = writeln!(out, "{text}\n----\n{}\n", lines.join("\n"));
            }
            Err(e) => {
                let _ = writeln!(out, "{text}\n----\n{}\n", error_text(&e));
            }
        }
    }
    out
}

/// A statement's text without the comment lines before it.
fn statement_text(text: &str) -> String {
    text.lines()
        .skip_while(|l| l.trim().is_empty() || l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .trim_end()
        .to_string()
}

/// A DataFusion context configured as the server configures a session's
/// (`server/src/session.rs`), with the planner's own functions.
fn context() -> SessionContext {
    let mut config = SessionConfig::new()
        .with_default_catalog_and_schema("golden", "public")
        .with_information_schema(false);
    let options = config.options_mut();
    options.sql_parser.dialect = datafusion::config::Dialect::PostgreSQL;
    options.execution.time_zone = Some("UTC".into());
    options.sql_parser.enable_ident_normalization = true;
    options.sql_parser.parse_float_as_decimal = true;
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .build();
    let ctx = SessionContext::new_with_state(state);
    for udf in rivulet_planner::window::udfs() {
        ctx.register_udf(udf);
    }
    for udwf in rivulet_planner::session::udwfs() {
        ctx.register_udwf(udwf);
    }
    for udf in rivulet_planner::computed::udfs() {
        ctx.register_udf(udf);
    }
    ctx
}

/// The SQLSTATE the server sends for a planner error (the mapping lives in
/// `server/src/error.rs`; DataFusion's errors are classified there by message, so they are shown
/// here as DataFusion's).
fn error_text(e: &PlanError) -> String {
    let code = match e {
        PlanError::Syntax { .. } => "42601",
        PlanError::Unsupported(_)
        | PlanError::UnsupportedHint { .. }
        | PlanError::NotImplemented(_) => "0A000",
        PlanError::InvalidRecursion(_) => "42P19",
        PlanError::UnknownType(_) => "42704",
        PlanError::DuplicateColumn(_) => "42701",
        PlanError::UnknownKeyColumn(_) | PlanError::UnknownColumn { .. } => "42703",
        PlanError::WrongType(_) => "42804",
        PlanError::MultiplePrimaryKeys(_) => "42P16",
        PlanError::InvalidParameter(_) => "22023",
        PlanError::Engine(_) => "engine",
        PlanError::DataFusion(_) => "datafusion",
    };
    let mut text = format!("ERROR {code}: {e}");
    if let PlanError::UnsupportedHint { hint, .. } = e {
        let _ = write!(text, "\nHINT: {hint}");
    }
    text
}

impl Case {
    /// Runs one statement: `Some(lines)` to print for a view, `None` for setup.
    async fn run(&mut self, statement: &Statement) -> Result<Option<Vec<String>>, PlanError> {
        match statement {
            Statement::Sql {
                stmt,
                append_only,
                watermark,
                emit_on_window_close,
                computed,
            } => match stmt.as_ref() {
                ast::Statement::CreateTable(create) => {
                    let (_, name) = rivulet_planner::ddl::object_name(&create.name)?;
                    let state = self.ctx.state();
                    let def = rivulet_planner::ddl::table_def(
                        create,
                        &name,
                        *append_only,
                        watermark.as_ref(),
                        |columns| rivulet_planner::computed::typed(&state, columns, computed),
                    )?;
                    if let Some(w) = &def.watermark {
                        rivulet_planner::stream::watermark_expr(&state, &def.schema(), w)?;
                    }
                    self.add_table(def)?;
                    Ok(None)
                }
                ast::Statement::CreateView(create) => {
                    let plan = self
                        .plan(&create.query.to_string(), *emit_on_window_close, false)
                        .await?;
                    let lines = plan.explain();
                    let (_, name) = rivulet_planner::ddl::object_name(&create.name)?;
                    self.add_view(&name, plan, *emit_on_window_close)?;
                    Ok(Some(lines))
                }
                ast::Statement::Explain { statement, .. } => match statement.as_ref() {
                    ast::Statement::CreateView(create) => {
                        let plan = self
                            .plan(&create.query.to_string(), *emit_on_window_close, false)
                            .await?;
                        Ok(Some(plan.explain()))
                    }
                    other => panic!("the golden harness explains only views, not: {other}"),
                },
                ast::Statement::Set(ast::Set::SingleAssignment {
                    variable, values, ..
                }) => {
                    let value = values
                        .iter()
                        .map(|v| v.to_string().trim_matches('\'').to_string())
                        .collect::<Vec<_>>()
                        .join(", ");
                    self.settings.insert(setting_name(variable), value);
                    Ok(None)
                }
                ast::Statement::Reset(ast::ResetStatement {
                    reset: ast::Reset::ConfigurationParameter(name),
                }) => {
                    self.settings.remove(&setting_name(name));
                    Ok(None)
                }
                other => panic!("the golden harness does not run: {other}"),
            },
            Statement::CreateSink {
                query,
                emit_on_window_close,
                ..
            } => Ok(Some(
                self.plan(query, *emit_on_window_close, true)
                    .await?
                    .explain(),
            )),
            _ => panic!("the golden harness does not run this statement kind"),
        }
    }

    /// Plans a view's or sink's query as `server/src/jobs.rs` `plan_stream` does.
    async fn plan(&self, query: &str, eowc: bool, sink: bool) -> Result<StreamPlan, PlanError> {
        let parsed = parse_sql(query)?;
        let [parsed] = parsed.as_slice() else {
            panic!("a view's query is not one statement: {query}");
        };
        let Statement::Sql { stmt, .. } = &parsed.statement else {
            panic!("a view's query is not a query: {query}");
        };
        let temporal = rivulet_planner::temporal::tables(stmt)?;
        rivulet_planner::recursive::check(stmt)?;
        let (stmt, functions) = rivulet_planner::recognize::prepare(&self.ctx, stmt).await?;
        let state = self.ctx.state();
        let plan = state
            .statement_to_plan(DFStatement::Statement(Box::new(stmt)))
            .await;
        for name in functions {
            self.ctx.deregister_udtf(&name);
        }
        let plan = postgres_types(plan?)?;
        let resolve = |name: &TableReference| -> Option<Resolved> {
            let r = self.relations.get(name.table())?;
            Some(Resolved {
                store: Arc::clone(&r.store),
                key: r.key.clone(),
                watermark: r.watermark.clone(),
                idle_timeout: r.idle_timeout,
                append_only: r.append_only,
                processing_time: r.processing_time,
                external: None,
            })
        };
        let duration = |name: &str| {
            self.settings.get(name).map(|v| {
                rivulet_planner::ddl::parse_duration(v)
                    .unwrap_or_else(|| panic!("{name} = '{v}' is no duration"))
            })
        };
        let parallelism = self
            .settings
            .get("streaming_parallelism")
            .map(|v| v.parse().unwrap())
            .unwrap_or(PARALLELISM);
        let ctx = StreamContext {
            state: &state,
            parallelism,
            emit_on_window_close: eowc,
            allowed_lateness: duration("table.exec.emit.allow-lateness")
                .map_or(0, |d| d.as_micros() as i64),
            state_ttl: duration("table.exec.state.ttl").filter(|d| !d.is_zero()),
            sink,
            resolve: &resolve,
            temporal: &temporal,
        };
        plan_view(&ctx, plan)
    }

    /// Registers a table with DataFusion and opens its (empty) store.
    fn add_table(&mut self, def: TableDef) -> Result<(), PlanError> {
        let schema = def.schema();
        let store = self.open_store(&def.name, Arc::clone(&schema), def.primary_key.clone())?;
        // A table without a WATERMARK but with a PROCTIME() column has processing time, as in
        // `server/src/jobs.rs`.
        let proctime = def.computed.iter().find(|c| {
            c.expr.replace(' ', "").to_lowercase()
                == format!("{}()", rivulet_planner::computed::PROCTIME)
        });
        let (watermark, processing_time) = match (&def.watermark, proctime) {
            (None, Some(p)) => (
                Some(WatermarkDef {
                    column: p.column,
                    expr: format!("\"{}\"", def.columns[p.column].name),
                }),
                true,
            ),
            (w, _) => (w.clone(), false),
        };
        let idle_timeout = def
            .options
            .get(rivulet_planner::ddl::IDLE_TIMEOUT)
            .and_then(|v| rivulet_planner::ddl::parse_duration(v));
        let relation = Relation {
            store,
            key: (!def.primary_key.is_empty()).then(|| def.primary_key.clone()),
            watermark,
            idle_timeout,
            append_only: def.append_only || def.options.contains_key("connector"),
            processing_time,
        };
        self.register(&def.name, schema, relation)
    }

    /// Registers a view: its rows as planned, keyed by its key unless it counts its rows.
    fn add_view(&mut self, name: &str, plan: StreamPlan, eowc: bool) -> Result<(), PlanError> {
        let def = TableDef {
            id: 0,
            database: String::new(),
            name: name.to_string(),
            columns: plan.columns,
            primary_key: plan.key,
            append_only: false,
            options: Default::default(),
            view: None,
            watermark: None,
            computed: Vec::new(),
        };
        let stored = def.schema();
        let store = self.open_store(name, Arc::clone(&stored), def.primary_key.clone())?;
        // A counted view's hidden count column is not visible to queries.
        let visible: Vec<usize> = (0..stored.fields().len())
            .filter(|&i| stored.field(i).name() != COUNT_COLUMN)
            .collect();
        let schema = Arc::new(
            stored
                .project(&visible)
                .map_err(|e| PlanError::DataFusion(e.into()))?,
        );
        let relation = Relation {
            store,
            key: (!plan.counted).then_some(def.primary_key),
            watermark: None,
            idle_timeout: None,
            append_only: eowc,
            processing_time: false,
        };
        self.register(name, schema, relation)
    }

    fn open_store(
        &mut self,
        name: &str,
        schema: SchemaRef,
        key: Vec<usize>,
    ) -> Result<Arc<TableStore>, PlanError> {
        let id = self.next_id;
        self.next_id += 1;
        let store = TableStore::open(self.store.clone(), id, name, schema, key)?;
        Ok(Arc::new(store))
    }

    fn register(
        &mut self,
        name: &str,
        schema: SchemaRef,
        relation: Relation,
    ) -> Result<(), PlanError> {
        let provider: Arc<dyn TableProvider> = Arc::new(EmptyTable::new(schema));
        self.ctx.register_table(name, provider)?;
        self.relations.insert(name.to_string(), relation);
        Ok(())
    }
}

/// The two of the server's Postgres typing rules (`server/src/pg/typing.rs`, `postgres_types`)
/// that change a view's plan: an integer literal that fits is `int4` (DataFusion's is `Int64`,
/// which makes it cast an `INT` column it meets), and `avg` of an integer averages a `numeric`.
/// Rewritten the same way, so plans here are those users see; the server's other rules (rounding
/// casts, date arithmetic, text constants) only change expressions inside operators.
fn postgres_types(plan: LogicalPlan) -> Result<LogicalPlan, PlanError> {
    let rewritten = plan.transform_up_with_subqueries(|node| match node {
        LogicalPlan::Limit(_) | LogicalPlan::Values(_) | LogicalPlan::RecursiveQuery(_) => {
            Ok(Transformed::no(node))
        }
        LogicalPlan::Union(union) => Ok(Transformed::yes(LogicalPlan::Union(
            Union::try_new_with_loose_types(union.inputs)?,
        ))),
        node => {
            let input = node
                .inputs()
                .first()
                .map(|i| Arc::clone(i.schema()))
                .unwrap_or_else(|| Arc::new(DFSchema::empty()));
            let names = NamePreserver::new(&node);
            let changed = node.map_expressions(|e| {
                let saved = names.save(&e);
                let retyped = e.transform_up(|e| retype(e, &input))?;
                Ok(if retyped.transformed {
                    retyped.update_data(|e| saved.restore(e))
                } else {
                    retyped
                })
            })?;
            Ok(Transformed::yes(changed.data.recompute_schema()?))
        }
    })?;
    Ok(rewritten.data)
}

fn retype(e: Expr, input: &DFSchema) -> datafusion::error::Result<Transformed<Expr>> {
    match e {
        Expr::Literal(ScalarValue::Int64(Some(v)), meta) => Ok(match i32::try_from(v) {
            Ok(small) => Transformed::yes(Expr::Literal(ScalarValue::Int32(Some(small)), meta)),
            Err(_) => Transformed::no(Expr::Literal(ScalarValue::Int64(Some(v)), meta)),
        }),
        Expr::AggregateFunction(mut agg)
            if agg.func.name().eq_ignore_ascii_case("avg") && agg.params.args.len() == 1 =>
        {
            let digits = match agg.params.args[0].get_type(input) {
                Ok(DataType::Int8 | DataType::Int16 | DataType::Int32) => 10,
                Ok(DataType::Int64) => 20,
                _ => return Ok(Transformed::no(Expr::AggregateFunction(agg))),
            };
            let arg = agg.params.args.remove(0);
            agg.params.args.push(Expr::Cast(Cast::new(
                Box::new(arg),
                DataType::Decimal128(digits + 12, 12),
            )));
            Ok(Transformed::yes(Expr::AggregateFunction(agg)))
        }
        other => Ok(Transformed::no(other)),
    }
}

/// A setting's name as the server keeps it: lowercased, quotes removed.
fn setting_name(name: &ast::ObjectName) -> String {
    name.to_string().trim_matches('\'').to_lowercase()
}
