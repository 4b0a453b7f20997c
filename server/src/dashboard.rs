//! The web dashboard at `/`: one page (HTML, CSS and JavaScript built into the binary, no CDN)
//! that polls `/api/jobs` every second and draws the jobs, each job's graph, per-operator rates
//! and watermarks, recent checkpoints and a chart of records per second.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use rivulet_engine::job::metrics::{JobMetrics, StageInputInfo};

use crate::http::HttpState;
use crate::jobs::JobOverview;
use crate::metrics::{now_micros, watermark_lag};

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

pub async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "not found\n").into_response(),
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// Every job with its graph and figures, as the dashboard draws them.
pub async fn jobs(State(state): State<Arc<HttpState>>) -> Response {
    let Some(shared) = state.shared.upgrade() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    };
    let jobs: Vec<Value> = shared
        .jobs
        .overview(&shared.catalog)
        .iter()
        .map(job_json)
        .collect();
    let body = json!({ "now_ms": now_micros() / 1000, "jobs": jobs }).to_string();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A watermark as milliseconds since the Unix epoch; `null` before any, or at the end of input.
fn watermark_ms(w: Option<i64>) -> Value {
    match w {
        Some(w) if w != i64::MAX => json!(w / 1000),
        _ => Value::Null,
    }
}

fn job_json(job: &JobOverview) -> Value {
    let mut out = json!({
        "id": job.id,
        "database": job.database,
        "name": job.name,
        "kind": job.kind,
        "status": job.status,
        "error": job.error,
        "restarts": job.restarts,
    });
    let Some((running, stats)) = &job.job else {
        return out;
    };
    let m = running.metrics();
    out["parallelism"] = json!(stats.parallelism);
    out["epoch"] = json!(stats.epoch);
    out["records_in"] = json!(stats.rows_in);
    out["records_out"] = json!(stats.rows_out);
    out["state_bytes"] = json!(stats.state_bytes);
    out["late_rows"] = json!(m.late_rows.load(Ordering::Relaxed));
    out["dead_letters"] = json!(stats.dead_letters);
    out["checkpoints"] = json!(m.checkpoints.load(Ordering::Relaxed));
    out["checkpoint_failures"] = json!(m.failed_epochs.load(Ordering::Relaxed));
    out["uptime_ms"] = json!(m.uptime().as_millis() as u64);
    out["stages"] = stages_json(m);
    out["sources"] = sources_json(m);
    out["epochs"] = m
        .recent_epochs()
        .iter()
        .rev()
        .take(20)
        .map(|e| {
            json!({
                "epoch": e.epoch,
                "checkpoint": e.checkpoint,
                "duration_ms": e.duration.as_secs_f64() * 1e3,
                "alignment_ms": e.alignment.as_secs_f64() * 1e3,
                "bytes": e.bytes,
                "rows": e.rows,
            })
        })
        .collect();
    out
}

fn stages_json(m: &JobMetrics) -> Value {
    m.stages
        .iter()
        .enumerate()
        .map(|(s, stage)| {
            let input = match &stage.input {
                StageInputInfo::Source { index, table } => {
                    json!({ "source": index, "table": table })
                }
                StageInputInfo::Edges(edges) => json!({
                    "edges": edges
                        .iter()
                        .map(|(from, hash)| json!({ "from": from, "hash": hash }))
                        .collect::<Vec<_>>()
                }),
            };
            let instances: Vec<Value> = stage
                .instances
                .iter()
                .map(|t| {
                    json!({
                        "busy_ms": t.busy_nanos.load(Ordering::Relaxed) / 1_000_000,
                        "backpressured_ms": t.backpressured_nanos.load(Ordering::Relaxed) / 1_000_000,
                        "idle_ms": t.idle_nanos() / 1_000_000,
                        "operators": t.operators.iter().map(|o| json!({
                            "records_in": o.rows_in.load(Ordering::Relaxed),
                            "records_out": o.rows_out.load(Ordering::Relaxed),
                            "input_watermark_ms": watermark_ms(o.input_watermark()),
                            "output_watermark_ms": watermark_ms(o.output_watermark()),
                            "state_bytes": o.state_bytes.load(Ordering::Relaxed),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({
                "stage": s,
                "input": input,
                "operators": stage.operators,
                "parallelism": stage.instances.len(),
                "instances": instances,
            })
        })
        .collect()
}

fn sources_json(m: &JobMetrics) -> Value {
    m.sources
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "source": i,
                "table": s.table,
                "records_in": s.rows.load(Ordering::Relaxed),
                "position": s.position.load(Ordering::Relaxed),
                "watermark_ms": watermark_ms(s.watermark()),
                "watermark_lag_s": s.watermark().map(watermark_lag),
                "idle_ms": s.idle_for().map(|d| d.as_millis() as u64),
                "splits": s.splits().iter().map(|p| json!({
                    "name": p.name, "position": p.position, "end": p.end,
                })).collect::<Vec<_>>(),
            })
        })
        .collect()
}
