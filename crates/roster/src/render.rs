//! Changes as consumers receive them — the feed's answers and webhook deliveries: `notice` from
//! the log alone, `full` and `scim` with the records they describe as they stand now.

use crate::domain::change::ChangeKind;
use crate::domain::feed::{ChangeItem, Format, StoredChange};
use crate::domain::resource::Resource;
use crate::domain::{scim_event, ResourceId};
use crate::store::{Store, StoreError};
use serde_json::Value;

/// A change in `format`.
pub async fn render(
    store: &Store,
    change: &StoredChange,
    format: Format,
) -> Result<Value, StoreError> {
    match format {
        Format::Notice => Ok(to_value(&ChangeItem::notice(change))),
        Format::Full => Ok(to_value(&full(store, change).await?)),
        Format::Scim => {
            let subject = match change.resource_id {
                Some(id) => current(store, id).await?,
                None => None,
            };
            Ok(scim_event::claims(change, subject.as_ref()))
        }
    }
}

/// The `full` form: the changed values, and the record as it stands for creates, restores and
/// additions.
pub async fn full(store: &Store, change: &StoredChange) -> Result<ChangeItem, StoreError> {
    let mut item = ChangeItem::notice(change);
    item.changes = change.attrs.clone();
    item.record = match (
        change.kind,
        change.resource_id,
        change.group_id,
        change.member_id,
    ) {
        (ChangeKind::ResourceCreated | ChangeKind::ResourceRestored, Some(id), _, _) => {
            current(store, id).await?.map(|r| to_value(&r))
        }
        (ChangeKind::MembershipAdded, _, Some(group), Some(member)) => {
            match store.get_membership(group, member).await {
                Ok(m) => Some(to_value(&m)),
                Err(StoreError::NotFound { .. }) => None,
                Err(e) => return Err(e),
            }
        }
        _ => None,
    };
    Ok(item)
}

/// A resource as it stands, if it still exists (purged ones do not).
async fn current(store: &Store, id: ResourceId) -> Result<Option<Resource>, StoreError> {
    match store.get_resource(id).await {
        Ok(r) => Ok(Some(r)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Our own types always serialise; `null` stands in should one ever not.
fn to_value(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or_default()
}
