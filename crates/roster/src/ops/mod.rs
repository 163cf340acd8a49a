//! The operations engine's workers: they claim queued full-updates (or ones whose worker died),
//! hold a lease while they apply, and record the outcome. Coordination is in the database, so any
//! number of roster processes can run workers against one PostgreSQL.

pub mod upload;

use crate::domain::operation::{Operation, OperationStatus};
use crate::domain::OperationId;
use crate::store::{ApplyOutcome, Store, StoreError};
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Workers in this process.
    pub workers: usize,
    /// How long a claim lasts without renewal; a worker that dies is replaced after this.
    pub lease: Duration,
    /// How often idle workers look for work queued by other processes.
    pub poll: Duration,
    /// Uploads that receive nothing for this long fail as abandoned.
    pub abandon_after: Duration,
    /// Attempts at one operation before it fails.
    pub max_attempts: u32,
    /// Changes older than this are deleted from the log (once an hour); none: kept forever.
    pub history_retention: Option<Duration>,
    /// How often the expiry sweeper deactivates the accounts whose `expires_at` passed.
    pub expiry_sweep: Duration,
    /// The lifecycle rules applies follow (an HR termination in an account sync).
    pub lifecycle: crate::domain::lifecycle::Policy,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            workers: 2,
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(1),
            abandon_after: Duration::from_secs(24 * 3600),
            max_attempts: 3,
            history_retention: None,
            expiry_sweep: Duration::from_secs(60),
            lifecycle: crate::domain::lifecycle::Policy::default(),
        }
    }
}

/// The engine of one process.
pub struct Engine {
    store: Arc<Store>,
    config: EngineConfig,
    node: String,
    wake: Notify,
    finished: Notify,
}

impl Engine {
    pub fn new(store: Arc<Store>, config: EngineConfig) -> Arc<Self> {
        let node = format!(
            "{}:{}:{}",
            hostname(),
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        );
        Arc::new(Self {
            store,
            config,
            node,
            wake: Notify::new(),
            finished: Notify::new(),
        })
    }

    /// Starts the workers; they stop when the process does.
    pub fn start(self: &Arc<Self>) {
        for _ in 0..self.config.workers.max(1) {
            let engine = self.clone();
            tokio::spawn(async move { engine.work().await });
        }
        let engine = self.clone();
        tokio::spawn(async move { engine.sweep().await });
        let engine = self.clone();
        tokio::spawn(async move { engine.expire().await });
    }

    /// Tells an idle worker that an operation was queued.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits up to `timeout` for an operation to leave `running`, and returns it as it is then.
    pub async fn wait_for(
        &self,
        id: OperationId,
        timeout: Duration,
    ) -> Result<Operation, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let finished = self.finished.notified();
            let mut finished = std::pin::pin!(finished);
            // Registered before the status is read, so a finish in between is not missed.
            finished.as_mut().enable();
            let op = self.store.get_operation(id).await?;
            if op.status != OperationStatus::Running || tokio::time::Instant::now() >= deadline {
                return Ok(op);
            }
            // Woken when a worker of this process finishes something; polled for other processes.
            let _ = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + self.config.poll),
                finished,
            )
            .await;
        }
    }

    async fn work(self: Arc<Self>) {
        loop {
            match self.work_once().await {
                Ok(true) => continue,
                Ok(false) => {
                    let _ = tokio::time::timeout(self.config.poll, self.wake.notified()).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "operations worker: retrying after an error");
                    tokio::time::sleep(self.config.poll).await;
                }
            }
        }
    }

    /// Claims and applies one operation; false when there was nothing to do.
    pub async fn work_once(&self) -> Result<bool, StoreError> {
        let Some(op) = self
            .store
            .claim_operation(&self.node, self.config.lease, self.config.max_attempts)
            .await?
        else {
            return Ok(false);
        };
        tracing::info!(operation = %op.id, "applying");
        let renewal = self.renew_while_applying(op.id);
        let started = std::time::Instant::now();
        let outcome = self
            .store
            .apply_full_update(&op, &self.config.lifecycle)
            .await;
        renewal.abort();
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) if self.attempts(op.id).await? < self.config.max_attempts => {
                // Left claimed: the lease expires and a worker tries again.
                return Err(e);
            }
            Err(e) => ApplyOutcome::Failed {
                reason: format!(
                    "the apply failed {} times; last error: {e}",
                    self.config.max_attempts
                ),
                counts: Default::default(),
            },
        };
        let done = self
            .store
            .finish_operation(op.id, &self.node, &outcome)
            .await?;
        tracing::info!(operation = %done.id, status = done.status.name(), "applied");
        crate::telemetry::applied(&done, started.elapsed());
        self.refresh_statistics().await;
        self.finished.notify_waiters();
        Ok(true)
    }

    /// Refreshes stale planner statistics; a failure is logged, since the work itself is done.
    async fn refresh_statistics(&self) {
        if let Err(e) = self.store.refresh_statistics().await {
            tracing::warn!(error = %e, "refreshing the planner's statistics failed");
        }
    }

    async fn attempts(&self, id: OperationId) -> Result<u32, StoreError> {
        self.store.operation_attempts(id).await
    }

    fn renew_while_applying(&self, id: OperationId) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        let node = self.node.clone();
        let lease = self.config.lease;
        tokio::spawn(async move {
            let mut every = tokio::time::interval(lease / 3);
            every.tick().await;
            loop {
                every.tick().await;
                match store.renew_lease(id, &node, lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(operation = %id, "lease lost to another worker");
                        return;
                    }
                    Err(e) => tracing::warn!(operation = %id, error = %e, "lease renewal failed"),
                }
            }
        })
    }

    /// Fails abandoned uploads and refreshes stale planner statistics, once a minute; trims the
    /// change log to its retention, once an hour.
    async fn sweep(self: Arc<Self>) {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        for minute in 0_u64.. {
            every.tick().await;
            if minute % 60 == 0 {
                self.trim_history().await;
            }
            self.refresh_statistics().await;
            let Ok(age) = chrono::Duration::from_std(self.config.abandon_after) else {
                return;
            };
            match self.store.fail_abandoned(Utc::now() - age).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(count = n, "failed abandoned uploads"),
                Err(e) => tracing::warn!(error = %e, "abandoned-upload sweep failed"),
            }
        }
    }
}

impl Engine {
    /// Deactivates the accounts whose `expires_at` passed, every `expiry_sweep`. The sweep is
    /// serialised in the database, so with several processes an account expires once.
    async fn expire(self: Arc<Self>) {
        let mut every = tokio::time::interval(self.config.expiry_sweep);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            match self.store.expire_due().await {
                Ok(Some(op)) => {
                    tracing::info!(
                        operation = %op.id,
                        accounts = op.counts.updated,
                        "deactivated expired accounts"
                    );
                    crate::telemetry::expiry_swept(op.counts.updated);
                    crate::telemetry::operation_ended(&op);
                }
                Ok(None) => crate::telemetry::expiry_swept(0),
                Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
            }
        }
    }

    /// This process's name in claims and leases.
    pub fn node(&self) -> &str {
        &self.node
    }

    async fn trim_history(&self) {
        let Some(age) = self
            .config
            .history_retention
            .and_then(|r| chrono::Duration::from_std(r).ok())
        else {
            return;
        };
        let Some(before) = Utc::now().checked_sub_signed(age) else {
            return;
        };
        match self.store.trim_history(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                count = n,
                "deleted changes older than the history retention"
            ),
            Err(e) => tracing::warn!(error = %e, "history trim failed"),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "roster".to_owned())
}
