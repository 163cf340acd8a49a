//! `/api/v1/correlation`: rules that propose cohort links, runs (operations) and the cases they
//! leave for a person to decide.

use super::{Json, Path, Query};
use crate::app::Caller;
use crate::domain::correlation::{
    CaseParams, CorrelationCase, CorrelationRule, RuleRequest, RunRequest,
};
use crate::domain::operation::Operation;
use crate::error::{ApiError, Problem};
use crate::server::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_rules, create_rule))
        .routes(routes!(update_rule, delete_rule))
        .routes(routes!(run_rule))
        .routes(routes!(list_cases))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleList {
    pub items: Vec<CorrelationRule>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CaseList {
    pub items: Vec<CorrelationCase>,
}

/// The correlation rules, by name.
#[utoipa::path(get, path = "/api/v1/correlation/rules", tag = "cohorts", security(("bearer" = ["read"])),
    responses((status = 200, description = "The rules", body = RuleList),
              (status = 403, description = "A token whose reads are bound to a source system", body = Problem)))]
async fn list_rules(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<RuleList>, ApiError> {
    caller.check_read_unbound("correlation")?;
    Ok(axum::Json(RuleList {
        items: state.store.rules().await?,
    }))
}

/// Create a rule: accounts of `source_system` whose identifier, normalised, equals the identifier
/// of exactly one account of `target_source_system` (case-insensitively) join its cohort.
#[utoipa::path(post, path = "/api/v1/correlation/rules", tag = "cohorts", security(("bearer" = ["write"])),
    request_body = RuleRequest,
    responses((status = 201, description = "Created", body = CorrelationRule),
              (status = 409, description = "A rule has this name", body = Problem),
              (status = 422, description = "A value breaks a rule", body = Problem)))]
async fn create_rule(
    State(state): State<AppState>,
    caller: Caller,
    Json(request): Json<RuleRequest>,
) -> Result<impl IntoResponse, ApiError> {
    caller.check_unbound("correlation")?;
    request.validate()?;
    let rule = state.store.create_rule(&caller.actor(), &request).await?;
    Ok((StatusCode::CREATED, axum::Json(rule)))
}

/// Change a rule.
#[utoipa::path(put, path = "/api/v1/correlation/rules/{id}", tag = "cohorts", security(("bearer" = ["write"])),
    params(("id" = Uuid, Path, description = "Rule id")),
    request_body = RuleRequest,
    responses((status = 200, description = "Changed", body = CorrelationRule),
              (status = 404, description = "No such rule", body = Problem),
              (status = 409, description = "Another rule has this name", body = Problem),
              (status = 422, description = "A value breaks a rule", body = Problem)))]
async fn update_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(request): Json<RuleRequest>,
) -> Result<axum::Json<CorrelationRule>, ApiError> {
    caller.check_unbound("correlation")?;
    request.validate()?;
    Ok(axum::Json(
        state
            .store
            .update_rule(&caller.actor(), id, &request)
            .await?,
    ))
}

/// Delete a rule (the links it made stay).
#[utoipa::path(delete, path = "/api/v1/correlation/rules/{id}", tag = "cohorts", security(("bearer" = ["write"])),
    params(("id" = Uuid, Path, description = "Rule id")),
    responses((status = 204, description = "Deleted"),
              (status = 404, description = "No such rule", body = Problem)))]
async fn delete_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    caller.check_unbound("correlation")?;
    state.store.delete_rule(&caller.actor(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Run a rule as one `correlate` operation: each account of its source ends `linked`,
/// `unmatched`, `disputed` (never linked automatically) or `already-linked` (links made or removed
/// by hand win). A home account without a cohort gets a new cohort prime.
#[utoipa::path(post, path = "/api/v1/correlation/runs", tag = "cohorts", security(("bearer" = ["write"])),
    request_body = RunRequest,
    responses((status = 201, description = "Applied", body = Operation),
              (status = 404, description = "No such rule", body = Problem)))]
async fn run_rule(
    State(state): State<AppState>,
    caller: Caller,
    Json(request): Json<RunRequest>,
) -> Result<impl IntoResponse, ApiError> {
    caller.check_unbound("correlation")?;
    let op = state
        .store
        .correlate(&caller.actor(), request.rule_id)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(op)))
}

/// The cases of a correlation run (default: the latest), say the `disputed` and `unmatched` ones
/// a person decides with `PUT /api/v1/resources/{id}/prime`.
#[utoipa::path(get, path = "/api/v1/correlation/cases", tag = "cohorts", security(("bearer" = ["read"])),
    params(CaseParams),
    responses((status = 200, description = "The cases", body = CaseList),
              (status = 400, description = "A bad filter", body = Problem),
              (status = 403, description = "A token whose reads are bound to a source system", body = Problem)))]
async fn list_cases(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<CaseParams>,
) -> Result<axum::Json<CaseList>, ApiError> {
    caller.check_read_unbound("correlation")?;
    let items = state
        .store
        .correlation_cases(p.operation_id, p.situation)
        .await?;
    Ok(axum::Json(CaseList { items }))
}
