//! Ad-hoc queries (`SELECT`, `VALUES`, `EXPLAIN`): planned and run by DataFusion over the tables'
//! current rows. Every table in one statement reads the same RocksDB snapshot.

use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast;

use super::Outcome;
use crate::error::SqlError;
use crate::session::Session;

/// Plans `stmt` with DataFusion, without binding parameters.
pub async fn plan_query(ctx: &SessionContext, stmt: &ast::Statement) -> Result<LogicalPlan, SqlError> {
    let state = ctx.state();
    Ok(state.statement_to_plan(DFStatement::Statement(Box::new(stmt.clone()))).await?)
}

/// Replaces `$n` placeholders with the bound values.
pub fn bind(plan: LogicalPlan, params: Option<&ParamValues>) -> Result<LogicalPlan, SqlError> {
    match params {
        Some(p) => Ok(plan.with_param_values(p.clone())?),
        None => Ok(plan),
    }
}

impl Session {
    pub(super) async fn query(&mut self, stmt: &ast::Statement, params: Option<&ParamValues>) -> Result<Outcome, SqlError> {
        let ctx = self.context()?.clone();
        let plan = bind(plan_query(&ctx, stmt).await?, params)?;
        let tag = match stmt {
            ast::Statement::Explain { .. } => "EXPLAIN",
            _ => "SELECT",
        };
        let df = ctx.execute_logical_plan(plan).await?;
        let schema = df.schema().inner().clone();
        let batches = df.collect().await?;
        Ok(Outcome::Rows { schema, batches, tag })
    }
}
