//! Correlation rules and runs, written once for both backends over [`Tx`]. A run is one
//! `correlate` operation in one transaction: it decides each account's situation in memory (the
//! normalisation is Rust, not SQL, so both backends agree), creates a cohort prime for a home
//! account that has none, links, and records a case per account.

use super::db::Tx;
use super::records;
use super::resource_sql as rsql;
use super::resource_sql::{compile, Values};
use super::Record;
use super::{now, StoreError, StoreResult};
use crate::domain::audit::{target, AuditRecord};
use crate::domain::change::{ChangeKind, ChangeRecord};
use crate::domain::correlation::{
    decide, Account, CorrelationCase, CorrelationRule, Normalize, RuleRequest, Situation, Target,
};
use crate::domain::operation::{Operation, OperationCounts};
use crate::domain::resource::ResourceType;
use crate::domain::token::Actor;
use crate::domain::{OperationId, ResourceId};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use uuid::Uuid;

type RuleRow = (
    Uuid,
    String,
    String,
    String,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
);

const RULE_COLUMNS: &str =
    "id, name, source_system, target_source_system, normalize, created, modified";

fn rule(row: RuleRow) -> StoreResult<CorrelationRule> {
    let normalize = Normalize::from_name(&row.4).ok_or_else(|| {
        StoreError::Database(sqlx::Error::Decode(
            format!("rule {} has unknown normalisation {:?}", row.0, row.4).into(),
        ))
    })?;
    Ok(CorrelationRule {
        id: row.0,
        name: row.1,
        source_system: row.2,
        target_source_system: row.3,
        normalize,
        created: row.5,
        modified: row.6,
    })
}

/// SQL string literal of a checked value.
pub(super) fn quoted(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn rule_not_found(id: Uuid) -> StoreError {
    StoreError::not_found(Record::CorrelationRule, id)
}

pub(super) async fn create_rule(
    tx: &mut Tx,
    actor: &Actor,
    request: &RuleRequest,
) -> StoreResult<CorrelationRule> {
    let sql = format!(
        "INSERT INTO correlation_rule ({RULE_COLUMNS}) VALUES (@id, {}, {}, {}, {}, @at, @at) \
         RETURNING {RULE_COLUMNS}",
        quoted(&request.name),
        quoted(&request.source_system),
        quoted(&request.target_source_system),
        quoted(request.normalize.name())
    );
    save_rule(tx, actor, Uuid::now_v7(), &sql, "correlation-rule.create").await
}

pub(super) async fn update_rule(
    tx: &mut Tx,
    actor: &Actor,
    id: Uuid,
    request: &RuleRequest,
) -> StoreResult<CorrelationRule> {
    let sql = format!(
        "UPDATE correlation_rule SET name = {}, source_system = {}, target_source_system = {}, \
         normalize = {}, modified = @at WHERE id = @id RETURNING {RULE_COLUMNS}",
        quoted(&request.name),
        quoted(&request.source_system),
        quoted(&request.target_source_system),
        quoted(request.normalize.name())
    );
    save_rule(tx, actor, id, &sql, "correlation-rule.update").await
}

/// Runs a statement that writes rule `id` and returns it, and audits the write.
async fn save_rule(
    tx: &mut Tx,
    actor: &Actor,
    id: Uuid,
    sql: &str,
    action: &'static str,
) -> StoreResult<CorrelationRule> {
    let values = Values::about(id, None, now(), None);
    let rows: Vec<RuleRow> = tx.fetch_all(&rsql::to_sql(&compile(sql), &values)).await?;
    let saved = rule(rows.into_iter().next().ok_or_else(|| rule_not_found(id))?)?;
    records::audit(tx, actor, AuditRecord::new(action, id.to_string())).await?;
    Ok(saved)
}

pub(super) async fn delete_rule(tx: &mut Tx, actor: &Actor, id: Uuid) -> StoreResult<()> {
    let values = Values::about(id, None, now(), None);
    let removed = tx
        .execute(&rsql::to_sql(
            &compile("DELETE FROM correlation_rule WHERE id = @id"),
            &values,
        ))
        .await?;
    if removed == 0 {
        return Err(rule_not_found(id));
    }
    records::audit(
        tx,
        actor,
        AuditRecord::new("correlation-rule.delete", id.to_string()),
    )
    .await
}

pub(super) async fn rules(tx: &mut Tx) -> StoreResult<Vec<CorrelationRule>> {
    let rows: Vec<RuleRow> = tx
        .fetch_all(&rsql::to_sql(
            &compile(&format!(
                "SELECT {RULE_COLUMNS} FROM correlation_rule ORDER BY name"
            )),
            &Values::about(Uuid::nil(), None, now(), None),
        ))
        .await?;
    rows.into_iter().map(rule).collect()
}

/// The user accounts of a source system: id, identifier, prime, pinned.
fn accounts(source: &str) -> String {
    format!(
        "SELECT id, identifier, prime_id, prime_pinned FROM resource WHERE source_system = {} \
         AND type = {} AND NOT deleted ORDER BY id",
        quoted(source),
        ResourceType::User.code()
    )
}

/// Runs a rule as one `correlate` operation.
pub(super) async fn run(tx: &mut Tx, actor: &Actor, rule_id: Uuid) -> StoreResult<Operation> {
    records::serialize(tx, "roster:prime-links").await?;
    let at = now();
    let nothing = Values::about(rule_id, None, at, Some(&actor.token_name));
    let found: Vec<RuleRow> = tx
        .fetch_all(&rsql::to_sql(
            &compile(&format!(
                "SELECT {RULE_COLUMNS} FROM correlation_rule WHERE id = @id"
            )),
            &nothing,
        ))
        .await?;
    let rule = rule(
        found
            .into_iter()
            .next()
            .ok_or_else(|| rule_not_found(rule_id))?,
    )?;
    let ids: Vec<(i64,)> = tx
        .fetch_all(&rsql::to_sql(
            &compile(&format!(
                "INSERT INTO operation (type, status, source_system, token_name, created, \
                 modified, completed, description) VALUES ('correlate', 'complete', {}, @token, \
                 @at, @at, @at, {}) RETURNING id",
                quoted(&rule.source_system),
                quoted(&format!("correlation rule {:?}", rule.name))
            )),
            &nothing,
        ))
        .await?;
    let op = ids.first().map(|r| r.0).unwrap_or_default();
    let sources: Vec<Account> = tx
        .fetch_all(&rsql::to_sql(
            &compile(&accounts(&rule.source_system)),
            &nothing,
        ))
        .await?;
    let targets: Vec<Target> = tx
        .fetch_all(&rsql::to_sql(
            &compile(&accounts(&rule.target_source_system)),
            &nothing,
        ))
        .await?;
    let mut target_prime: HashMap<Uuid, (Option<Uuid>, bool)> = targets
        .iter()
        .map(|(id, _, prime, pinned)| (*id, (*prime, *pinned)))
        .collect();
    let current: HashMap<Uuid, Option<Uuid>> = sources
        .iter()
        .map(|(id, _, prime, _)| (*id, *prime))
        .collect();
    let mut tally: HashMap<Situation, i64> = HashMap::new();
    for decision in decide(rule.normalize, &sources, &targets) {
        let mut situation = decision.situation;
        let mut prime = current.get(&decision.account).copied().flatten();
        if let Some(target) = decision.target {
            match cohort_of(tx, actor, op, target, &mut target_prime).await? {
                Some(cohort) => {
                    link(tx, actor, op, decision.account, None, cohort).await?;
                    prime = Some(cohort);
                }
                // A home account unlinked by hand has no cohort to join.
                None => situation = Situation::Unmatched,
            }
        }
        *tally.entry(situation).or_default() += 1;
        let candidates = serde_json::to_string(&decision.candidates).unwrap_or_default();
        tx.execute(&rsql::to_sql(
            &compile(&format!(
                "INSERT INTO correlation_case (operation_id, account_id, situation, prime_id, \
                 candidates) VALUES ({op}, @id, '{}', @other, {})",
                situation.name(),
                quoted(&candidates)
            )),
            &Values::about(decision.account, prime, at, None),
        ))
        .await?;
    }
    let count = |s: Situation| tally.get(&s).copied().unwrap_or_default();
    let summary = Situation::ALL
        .iter()
        .map(|s| format!("{} {}", count(*s), s.name()))
        .collect::<Vec<_>>()
        .join(", ");
    let counts = OperationCounts {
        added: count(Situation::Linked),
        unchanged: count(Situation::AlreadyLinked),
        ..OperationCounts::default()
    };
    tx.execute(&rsql::to_sql(
        &compile(&format!(
            "UPDATE operation SET added = {}, unchanged = {}, reason = {} WHERE id = {op}",
            counts.added,
            counts.unchanged,
            quoted(&summary)
        )),
        &nothing,
    ))
    .await?;
    let record = AuditRecord::new("operation.correlate", target::operation(OperationId(op)))
        .with_detail(serde_json::json!({ "rule_id": rule.id }));
    records::audit(tx, actor, record).await?;
    records::operation(tx, OperationId(op)).await
}

/// The cohort of a target account, created (a new prime, the account linked to it) when it has
/// none; none when the account was unlinked by hand.
async fn cohort_of(
    tx: &mut Tx,
    actor: &Actor,
    op: i64,
    target: Uuid,
    primes: &mut HashMap<Uuid, (Option<Uuid>, bool)>,
) -> StoreResult<Option<Uuid>> {
    match primes.get(&target).copied() {
        Some((Some(prime), _)) => Ok(Some(prime)),
        Some((None, true)) => Ok(None),
        _ => {
            let prime = Uuid::now_v7();
            let at = now();
            let values = Values::about(prime, None, at, Some(&actor.token_name));
            tx.execute(&rsql::to_sql(
                &compile(&format!(
                    "INSERT INTO resource (id, type, typename, source_system, identifier, \
                     created, modified) VALUES (@id, {}, 'prime', 'roster', 'cohort:{prime}', \
                     @at, @at)",
                    ResourceType::Prime.code()
                )),
                &values,
            ))
            .await?;
            let created = records::lock(tx, ResourceId(prime)).await?;
            let change = ChangeRecord::resource(ChangeKind::ResourceCreated, &created)
                .with_operation(OperationId(op));
            records::log_change(tx, actor, change).await?;
            link(tx, actor, op, target, None, prime).await?;
            primes.insert(target, (Some(prime), false));
            Ok(Some(prime))
        }
    }
}

/// Links an account found by a rule (not pinned: a person can still change it).
async fn link(
    tx: &mut Tx,
    actor: &Actor,
    op: i64,
    account: Uuid,
    old: Option<Uuid>,
    prime: Uuid,
) -> StoreResult<()> {
    let values = Values::about(account, Some(prime), now(), Some(&actor.token_name));
    tx.execute(&rsql::to_sql(
        &compile("UPDATE resource SET prime_id = @other, modified = @at WHERE id = @id"),
        &values,
    ))
    .await?;
    let linked = records::lock(tx, ResourceId(account)).await?;
    let change = ChangeRecord::resource(ChangeKind::IdentityLinked, &linked)
        .with_operation(OperationId(op))
        .with_attrs(serde_json::json!({ "prime_id": {"old": old, "new": prime} }));
    records::log_change(tx, actor, change).await
}

type CaseRow = (i64, Uuid, String, Option<Uuid>, String);

/// The cases of a run (default: the latest), optionally of one situation.
pub(super) async fn cases(
    tx: &mut Tx,
    operation: Option<i64>,
    situation: Option<Situation>,
) -> StoreResult<Vec<CorrelationCase>> {
    let run = match operation {
        Some(op) => op.to_string(),
        None => "(SELECT max(id) FROM operation WHERE type = 'correlate')".to_owned(),
    };
    let only = situation
        .map(|s| format!(" AND situation = '{}'", s.name()))
        .unwrap_or_default();
    let rows: Vec<CaseRow> = tx
        .fetch_all(&rsql::to_sql(
            &compile(&format!(
                "SELECT operation_id, account_id, situation, prime_id, candidates \
                 FROM correlation_case WHERE operation_id = {run}{only} ORDER BY account_id"
            )),
            &Values::about(Uuid::nil(), None, now(), None),
        ))
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(operation_id, account, situation, prime, candidates)| CorrelationCase {
                operation_id,
                account_id: ResourceId(account),
                situation: Situation::from_name(&situation).unwrap_or(Situation::Unmatched),
                prime_id: prime.map(ResourceId),
                candidates: serde_json::from_str::<Vec<ResourceId>>(&candidates)
                    .unwrap_or_default(),
            },
        )
        .collect())
}
