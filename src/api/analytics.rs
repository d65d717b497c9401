//! `/api/v1/workflows/{id}/analytics` and `/suggestions`: what a workflow
//! version's executions did over a range of UTC days, read from the
//! rollups (`store::analytics`), which trail the record by the maintenance
//! interval (`as_of` says up to when).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiQuery, Auth, Id};
use crate::engine::definition::Definition;
use crate::engine::insight::{self, Bottleneck, FunnelStep, StepTiming, Suggestion};
use crate::store::analytics::{Analytics as Rollups, ErrorCount, Trend};

/// Days of a range when `from` is not given.
const DEFAULT_DAYS: i64 = 30;
/// Longest range.
const MAX_DAYS: i64 = 366;

/// Which version and which days.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsQuery {
    /// Workflow version; default the latest.
    pub version: Option<i32>,
    /// First UTC day (YYYY-MM-DD); default 29 days before `to`.
    pub from: Option<NaiveDate>,
    /// Last UTC day, inclusive; default today. At most 366 days after `from`.
    pub to: Option<NaiveDate>,
}

/// A workflow version's analytics over a range of days.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowAnalytics {
    /// Workflow.
    pub workflow_id: Uuid,
    /// Version.
    pub version: i32,
    /// First day.
    pub from: NaiveDate,
    /// Last day, inclusive.
    pub to: NaiveDate,
    /// Log rows written before this time are counted; execution starts and
    /// ends are counted up to the last maintenance pass.
    pub as_of: Option<DateTime<Utc>>,
    /// Per step in definition order.
    pub funnel: Vec<FunnelStep>,
    /// Time in step per attempt, run and parked, per step with history.
    pub timings: Vec<StepTiming>,
    /// Where executions spend their time, waits aside.
    pub bottleneck: Option<Bottleneck>,
    /// Errors by class and fingerprint, most frequent first (at most 50).
    pub errors: Vec<ErrorCount>,
    /// Every day of the range.
    pub trends: Vec<Trend>,
}

/// Suggestions for a workflow version.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuggestionList {
    /// Workflow.
    pub workflow_id: Uuid,
    /// Version.
    pub version: i32,
    /// First day of the evidence.
    pub from: NaiveDate,
    /// Last day, inclusive.
    pub to: NaiveDate,
    /// Each with its evidence; empty when nothing stands out.
    pub items: Vec<Suggestion>,
}

/// Funnel, time in step (p50/p95, run and parked), bottleneck, errors by
/// class and fingerprint, and daily trends of one workflow version.
#[utoipa::path(operation_id = "workflow_analytics", get, path = "/api/v1/workflows/{id}/analytics", tag = "analytics",
    params(("id" = Uuid, Path), AnalyticsQuery),
    responses((status = 200, body = WorkflowAnalytics), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn analytics(
    State(state): State<AppState>,
    auth: Auth,
    Id(id): Id,
    ApiQuery(q): ApiQuery<AnalyticsQuery>,
) -> Result<Json<WorkflowAnalytics>, ApiError> {
    Ok(Json(Report::read(&state, auth, id, &q).await?.analytics()))
}

/// Suggestions for one workflow version, each naming its evidence: steps
/// never reached, steps failing often (with their top fingerprint), waits
/// ending outside sending hours, conditions always taking one side.
#[utoipa::path(operation_id = "workflow_suggestions", get, path = "/api/v1/workflows/{id}/suggestions", tag = "analytics",
    params(("id" = Uuid, Path), AnalyticsQuery),
    responses((status = 200, body = SuggestionList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn suggestions(
    State(state): State<AppState>,
    auth: Auth,
    Id(id): Id,
    ApiQuery(q): ApiQuery<AnalyticsQuery>,
) -> Result<Json<SuggestionList>, ApiError> {
    Ok(Json(
        Report::read(&state, auth, id, &q).await?.suggestions(),
    ))
}

/// What both answers are computed from: one read of a workflow version's
/// definition and rollups (the console shows both from one).
pub struct Report {
    workflow_id: Uuid,
    def: Arc<Definition>,
    version: i32,
    days: (NaiveDate, NaiveDate),
    rollups: Rollups,
}

impl Report {
    /// The version's definition, the days, and the rollups over them.
    ///
    /// # Errors
    /// 404 for another account's or no workflow; a bad version or range
    /// names its field; database errors.
    pub async fn read(
        state: &AppState,
        auth: Auth,
        id: Uuid,
        q: &AnalyticsQuery,
    ) -> Result<Report, ApiError> {
        let days = range(q, Utc::now().date_naive())?;
        let workflow = state
            .reader
            .workflow(auth.account_id, id)
            .await?
            .ok_or_else(|| ApiError::not_found("workflow"))?;
        let version = q.version.unwrap_or(workflow.latest_version);
        if version < 1 || version > workflow.latest_version {
            return Err(ApiError::invalid(
                "version",
                format!("the workflow has versions 1 to {}", workflow.latest_version),
            ));
        }
        let def = state.engine.definition(id, version).await?;
        let rollups = state
            .reader
            .analytics(auth.account_id, id, version, days)
            .await?;
        Ok(Report {
            workflow_id: id,
            def,
            version,
            days,
            rollups,
        })
    }

    /// Funnel, timings, bottleneck, trends, errors.
    pub fn analytics(self) -> WorkflowAnalytics {
        let (def, a) = (&self.def, &self.rollups);
        WorkflowAnalytics {
            workflow_id: self.workflow_id,
            version: self.version,
            from: self.days.0,
            to: self.days.1,
            as_of: a.upto,
            funnel: insight::funnel(def, a),
            timings: insight::timings(def, a),
            bottleneck: insight::bottleneck(def, a),
            trends: insight::trends(a, self.days.0, self.days.1),
            errors: self.rollups.errors,
        }
    }

    /// The suggestions with their evidence.
    pub fn suggestions(&self) -> SuggestionList {
        SuggestionList {
            workflow_id: self.workflow_id,
            version: self.version,
            from: self.days.0,
            to: self.days.1,
            items: insight::suggestions(&self.def, &self.rollups),
        }
    }
}

/// The days asked for, checked.
fn range(q: &AnalyticsQuery, today: NaiveDate) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let to = q.to.unwrap_or(today);
    let from = q.from.unwrap_or(to - Duration::days(DEFAULT_DAYS - 1));
    if from > to {
        return Err(ApiError::invalid("from", "must not be after `to`"));
    }
    if (to - from).num_days() >= MAX_DAYS {
        return Err(ApiError::invalid(
            "to",
            format!("a range covers at most {MAX_DAYS} days"),
        ));
    }
    Ok((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(from: Option<&str>, to: Option<&str>) -> AnalyticsQuery {
        AnalyticsQuery {
            version: None,
            from: from.map(|d| d.parse().unwrap()),
            to: to.map(|d| d.parse().unwrap()),
        }
    }

    #[test]
    fn a_range_defaults_to_thirty_days_and_refuses_nonsense_by_name() {
        let today: NaiveDate = "2026-11-28".parse().unwrap();
        let (from, to) = range(&q(None, None), today).unwrap();
        assert_eq!(
            (from.to_string(), to.to_string()),
            ("2026-10-30".into(), "2026-11-28".into())
        );
        let err = range(&q(Some("2026-11-29"), Some("2026-11-28")), today).unwrap_err();
        assert_eq!(err.field_name(), Some("from"));
        let err = range(&q(Some("2025-01-01"), Some("2026-11-28")), today).unwrap_err();
        assert_eq!(err.field_name(), Some("to"));
    }
}
