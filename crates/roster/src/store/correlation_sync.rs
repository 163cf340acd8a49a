//! Correlation rules and runs, written once for both backends over [`Tx`]. A run is one
//! `correlate` operation in one transaction: it decides each account's situation in memory (the
//! normalisation is Rust, not SQL, so both backends agree), creates a cohort prime for a home
//! account that has none, links, and records a case per account.

use super::db::Tx;
use super::query::Sql;
use super::records;
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

fn rule_not_found(id: Uuid) -> StoreError {
    StoreError::not_found(Record::CorrelationRule, id)
}

/// Runs a statement that writes rule `id` (`$1`) as `request` asks (`$2` to `$5`, the time
/// `$6`) and returns it, and audits the write.
async fn save_rule(
    tx: &mut Tx,
    actor: &Actor,
    id: Uuid,
    statement: String,
    request: &RuleRequest,
    action: &'static str,
) -> StoreResult<CorrelationRule> {
    let save = Sql::new(statement)
        .bind(id)
        .bind(&request.name)
        .bind(&request.source_system)
        .bind(&request.target_source_system)
        .bind(request.normalize.name())
        .bind(now());
    let rows: Vec<RuleRow> = tx.fetch_all(&save).await?;
    let saved = rule(rows.into_iter().next().ok_or_else(|| rule_not_found(id))?)?;
    records::audit(tx, actor, AuditRecord::new(action, id.to_string())).await?;
    Ok(saved)
}

/// The user accounts of a source system: id, identifier, prime, pinned.
fn accounts(source: &str) -> Sql {
    Sql::new(
        "SELECT id, identifier, prime_id, prime_pinned FROM resource WHERE source_system = $1 \
         AND type = $2 AND NOT deleted ORDER BY id",
    )
    .bind(source)
    .bind(ResourceType::User.code())
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
            let insert = Sql::new(
                "INSERT INTO resource (id, type, typename, source_system, identifier, created, \
                 modified) VALUES ($1, $2, 'prime', 'roster', $3, $4, $4)",
            )
            .bind(prime)
            .bind(ResourceType::Prime.code())
            .bind(format!("cohort:{prime}"))
            .bind(now());
            tx.execute(&insert).await?;
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
    let update = Sql::new("UPDATE resource SET prime_id = $2, modified = $3 WHERE id = $1")
        .bind(account)
        .bind(prime)
        .bind(now());
    tx.execute(&update).await?;
    let linked = records::lock(tx, ResourceId(account)).await?;
    let change = ChangeRecord::resource(ChangeKind::IdentityLinked, &linked)
        .with_operation(OperationId(op))
        .with_attrs(serde_json::json!({ "prime_id": {"old": old, "new": prime} }));
    records::log_change(tx, actor, change).await
}

type CaseRow = (i64, Uuid, String, Option<Uuid>, String);

impl super::Store {
    pub async fn create_rule(
        &self,
        actor: &Actor,
        request: &RuleRequest,
    ) -> StoreResult<CorrelationRule> {
        self.in_write(async |tx| {
            let insert = format!(
                "INSERT INTO correlation_rule ({RULE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $6) \
                 RETURNING {RULE_COLUMNS}"
            );
            save_rule(
                tx,
                actor,
                Uuid::now_v7(),
                insert,
                request,
                "correlation-rule.create",
            )
            .await
        })
        .await
    }

    pub async fn update_rule(
        &self,
        actor: &Actor,
        id: uuid::Uuid,
        request: &RuleRequest,
    ) -> StoreResult<CorrelationRule> {
        self.in_write(async |tx| {
            let update = format!(
                "UPDATE correlation_rule SET name = $2, source_system = $3, \
                 target_source_system = $4, normalize = $5, modified = $6 WHERE id = $1 \
                 RETURNING {RULE_COLUMNS}"
            );
            save_rule(tx, actor, id, update, request, "correlation-rule.update").await
        })
        .await
    }

    pub async fn delete_rule(&self, actor: &Actor, id: uuid::Uuid) -> StoreResult<()> {
        self.in_write(async |tx| {
            let delete = Sql::new("DELETE FROM correlation_rule WHERE id = $1").bind(id);
            let removed = tx.execute(&delete).await?;
            if removed == 0 {
                return Err(rule_not_found(id));
            }
            records::audit(
                tx,
                actor,
                AuditRecord::new("correlation-rule.delete", id.to_string()),
            )
            .await
        })
        .await
    }

    pub async fn rules(&self) -> StoreResult<Vec<CorrelationRule>> {
        let tx = &mut self.db().snapshot().await?;
        let select = Sql::new(format!(
            "SELECT {RULE_COLUMNS} FROM correlation_rule ORDER BY name"
        ));
        let rows: Vec<RuleRow> = tx.fetch_all(&select).await?;
        rows.into_iter().map(rule).collect()
    }

    /// Runs a correlation rule as one `correlate` operation.
    pub async fn correlate(&self, actor: &Actor, rule_id: uuid::Uuid) -> StoreResult<Operation> {
        self.in_write(async |tx| {
            records::serialize(tx, "roster:prime-links").await?;
            let at = now();
            let select = Sql::new(format!(
                "SELECT {RULE_COLUMNS} FROM correlation_rule WHERE id = $1"
            ));
            let found: Vec<RuleRow> = tx.fetch_all(&select.bind(rule_id)).await?;
            let rule = rule(
                found
                    .into_iter()
                    .next()
                    .ok_or_else(|| rule_not_found(rule_id))?,
            )?;
            let insert = Sql::new(
                "INSERT INTO operation (type, status, source_system, token_name, created, \
                 modified, completed, description) \
                 VALUES ('correlate', 'complete', $1, $2, $3, $3, $3, $4) RETURNING id",
            )
            .bind(&rule.source_system)
            .bind(&actor.token_name)
            .bind(at)
            .bind(format!("correlation rule {:?}", rule.name));
            let op: i64 = tx.scalar(&insert).await?;
            let sources: Vec<Account> = tx.fetch_all(&accounts(&rule.source_system)).await?;
            let targets: Vec<Target> = tx.fetch_all(&accounts(&rule.target_source_system)).await?;
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
                let case = Sql::new(
                    "INSERT INTO correlation_case (operation_id, account_id, situation, prime_id, \
                     candidates) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(op)
                .bind(decision.account)
                .bind(situation.name())
                .bind(prime)
                .bind(candidates);
                tx.execute(&case).await?;
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
            let summarise = Sql::new(
                "UPDATE operation SET added = $2, unchanged = $3, reason = $4 WHERE id = $1",
            )
            .bind(op)
            .bind(counts.added)
            .bind(counts.unchanged)
            .bind(summary);
            tx.execute(&summarise).await?;
            let record =
                AuditRecord::new("operation.correlate", target::operation(OperationId(op)))
                    .with_detail(serde_json::json!({ "rule_id": rule.id }));
            records::audit(tx, actor, record).await?;
            records::operation(tx, OperationId(op)).await
        })
        .await
    }

    /// The cases of a correlation run (default: the latest).
    pub async fn correlation_cases(
        &self,
        operation: Option<i64>,
        situation: Option<Situation>,
    ) -> StoreResult<Vec<CorrelationCase>> {
        let tx = &mut self.db().snapshot().await?;
        let select = Sql::new(
            "SELECT operation_id, account_id, situation, prime_id, candidates \
             FROM correlation_case WHERE operation_id = coalesce($1, \
               (SELECT max(id) FROM operation WHERE type = 'correlate')) \
             AND ($2 IS NULL OR situation = $2) ORDER BY account_id",
        )
        .bind(operation)
        .bind(situation.map(Situation::name));
        let rows: Vec<CaseRow> = tx.fetch_all(&select).await?;
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
}
