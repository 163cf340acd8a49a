//! Webhook subscriptions: an endpoint that receives the change feed, each with its own durable
//! cursor, filters and format, delivered in order and at least once.

use super::change::ChangeKind;
use super::feed::{ChangeFilter, Format};
use super::{InvalidInput, ResourceId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Body of `POST /api/v1/subscriptions`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubscription {
    /// Where each change is POSTed: an `http://` or `https://` URL, without a user name or
    /// password.
    pub url: String,
    /// `notice` (default), `full` or `scim` (RFC 8935 push of signed security event tokens).
    #[serde(default)]
    pub format: Format,
    /// Only changes of this source system.
    #[serde(default)]
    pub source_system: Option<String>,
    /// Only changes of this group's memberships and of the group itself.
    #[serde(default)]
    pub group_id: Option<ResourceId>,
    /// Only these kinds, e.g. `["membership.removed"]`.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Where deliveries start: `now` (default), `start` (the oldest change kept), or a feed
    /// cursor (an export's, to follow a snapshot).
    #[serde(default)]
    pub from: Option<String>,
    /// The most changes one delivery carries, 1 to 1000 (default 100); a `scim` subscription
    /// takes 1 only, since RFC 8935 pushes one security event per request.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000)]
    pub batch_size: Option<u32>,
}

/// The most changes one delivery of a JSON format carries by default.
pub const DEFAULT_BATCH_SIZE: u32 = 100;
/// The most changes one delivery may carry.
pub const MAX_BATCH_SIZE: u32 = 1000;

/// Where a new subscription starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Now,
    Beginning,
    At(super::feed::Cursor),
}

/// A checked subscription request.
#[derive(Debug, Clone)]
pub struct SubscriptionSpec {
    pub url: url::Url,
    pub format: Format,
    pub filter: ChangeFilter,
    pub start: Start,
    pub batch_size: u32,
}

impl NewSubscription {
    pub fn validate(&self) -> Result<SubscriptionSpec, InvalidInput> {
        let url = url::Url::parse(&self.url)
            .map_err(|e| InvalidInput::new(format!("url {:?} is not a URL: {e}", self.url)))?;
        // The URL is stored, shown by every read and written to the audit trail: it must not
        // carry a secret. (The message does not repeat the URL, which holds one.)
        if !url.username().is_empty() || url.password().is_some() {
            return Err(InvalidInput::new(
                "url must not carry a user name or password (user:password@host): a \
                 subscription's URL is stored, shown by every read and written to the audit \
                 trail; receivers verify deliveries by their Roster-Signature instead",
            ));
        }
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(InvalidInput::new(format!(
                "url {:?} must be an http:// or https:// URL with a host",
                self.url
            )));
        }
        super::resource::check_optional_key("source_system", self.source_system.as_deref())?;
        let joined = self.kinds.join(",");
        let kinds = ChangeFilter::parse_kinds(Some(joined.as_str()).filter(|k| !k.is_empty()))?;
        let start = match self.from.as_deref() {
            None | Some("now") => Start::Now,
            Some("start") => Start::Beginning,
            Some(cursor) => Start::At(super::feed::Cursor::decode(cursor)?),
        };
        let batch_size = match (self.format, self.batch_size) {
            (Format::Scim, None | Some(1)) => 1,
            (Format::Scim, Some(n)) => {
                return Err(InvalidInput::new(format!(
                    "batch_size {n} cannot be used with format scim: RFC 8935 pushes one \
                     security event per request, so a scim subscription's batch_size is 1"
                )))
            }
            (_, None) => DEFAULT_BATCH_SIZE,
            (_, Some(n @ 1..=MAX_BATCH_SIZE)) => n,
            (_, Some(n)) => {
                return Err(InvalidInput::new(format!(
                    "batch_size {n} must be 1 to {MAX_BATCH_SIZE}"
                )))
            }
        };
        Ok(SubscriptionSpec {
            batch_size,
            url,
            format: self.format,
            filter: ChangeFilter {
                source_system: self.source_system.clone(),
                group_id: self.group_id,
                kinds,
                member_source: None,
            },
            start,
        })
    }
}

/// Whether deliveries run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionStatus {
    Active,
    /// Stopped after too many failed attempts in a row; `POST …/resume` starts it again.
    Paused,
}

impl SubscriptionStatus {
    pub fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Active, Self::Paused]
            .into_iter()
            .find(|s| s.name() == name)
    }
}

/// A subscription and the state of its deliveries.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Subscription {
    pub id: Uuid,
    pub url: String,
    pub format: Format,
    pub source_system: Option<String>,
    pub group_id: Option<ResourceId>,
    pub kinds: Vec<String>,
    pub status: SubscriptionStatus,
    /// The feed cursor after the last change delivered (or skipped by the filters).
    pub cursor: String,
    /// Changes delivered so far.
    pub delivered: i64,
    /// The most changes one delivery carries.
    pub batch_size: i32,
    /// Failed rounds in a row (0 after a success); each round tries a delivery up to four times.
    pub failures: i32,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// When the next attempt is due.
    pub next_attempt_at: DateTime<Utc>,
    pub created: DateTime<Utc>,
    /// Matching changes waiting for delivery, counted up to 1000 (on single reads).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<u32>,
}

impl Subscription {
    /// The changes this subscription wants.
    pub fn filter(&self) -> ChangeFilter {
        ChangeFilter {
            source_system: self.source_system.clone(),
            group_id: self.group_id,
            kinds: self
                .kinds
                .iter()
                .filter_map(|k| ChangeKind::from_name(k))
                .collect(),
            member_source: None,
        }
    }
}

/// The answer to `POST /api/v1/subscriptions`: the subscription and its signing secret, shown
/// only this once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedSubscription {
    #[serde(flatten)]
    pub subscription: Subscription,
    /// Verifies deliveries: `Roster-Signature` is an HMAC-SHA256 with it, and `scim` deliveries
    /// are HS256 JWTs signed with it.
    pub secret: String,
}
