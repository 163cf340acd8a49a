//! Full-updates: the lines a connector uploads, the per-group diff, and the deletion-safety rule.

use super::resource::{check_optional_key, check_optional_text, ResourceType};
use super::{InvalidInput, ResourceId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One uploaded membership line. The member is named by roster id, by `(source_system,
/// identifier)` or by `(source_system, external_id)`; in a full-update of a whole source system,
/// the line also names its group, by `group_id` or by `group` (an identifier in that source).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberLine {
    #[serde(default)]
    pub member_id: Option<ResourceId>,
    #[serde(default)]
    pub source_system: Option<String>,
    #[serde(default)]
    pub identifier: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
    /// The member's type, when an identifier is shared by resources of several types.
    #[serde(default, rename = "type")]
    pub ty: Option<ResourceType>,
    #[serde(default)]
    pub member_name: Option<String>,
    #[serde(default)]
    pub contributing: Option<bool>,
    #[serde(default)]
    pub group_id: Option<ResourceId>,
    /// The identifier of the line's group within the operation's source system.
    #[serde(default)]
    pub group: Option<String>,
}

/// How a line names its member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberRef {
    Id(ResourceId),
    Identifier {
        source_system: String,
        identifier: String,
    },
    ExternalId {
        source_system: String,
        external_id: String,
    },
}

/// How a line names its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRef {
    /// The operation's own group (a full-update of one group).
    Scope,
    Id(ResourceId),
    Identifier(String),
}

/// A line checked and ready to stage.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedLine {
    /// 1-based line number within its chunk.
    pub line: i32,
    pub group: GroupRef,
    pub member: MemberRef,
    pub member_type: Option<ResourceType>,
    pub member_name: Option<String>,
    pub contributing: Option<bool>,
}

/// A line that could not be used, with its number and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct LineError {
    pub chunk: i32,
    pub line: i32,
    pub reason: String,
}

impl MemberLine {
    /// Checks a parsed line. `source_scope` is true in a full-update of a whole source system,
    /// where every line must name its group.
    pub fn stage(self, line: i32, source_scope: bool) -> Result<StagedLine, InvalidInput> {
        // The keys a missing member is created with (`create_missing`) follow the rules of every
        // resource's keys; a key that breaks them names no resource either.
        check_optional_key("source_system", self.source_system.as_deref())?;
        check_optional_key("identifier", self.identifier.as_deref())?;
        check_optional_key("external_id", self.external_id.as_deref())?;
        check_optional_key("group", self.group.as_deref())?;
        check_optional_text("member_name", self.member_name.as_deref())?;
        let member = match (
            self.member_id,
            self.source_system,
            self.identifier,
            self.external_id,
        ) {
            (Some(id), None, None, None) => MemberRef::Id(id),
            (None, Some(source_system), Some(identifier), None) => MemberRef::Identifier {
                source_system,
                identifier,
            },
            (None, Some(source_system), None, Some(external_id)) => MemberRef::ExternalId {
                source_system,
                external_id,
            },
            _ => {
                return Err(InvalidInput::new(
                    "name the member by member_id, by source_system and identifier, or by \
                     source_system and external_id (exactly one of these)",
                ))
            }
        };
        let group =
            match (source_scope, self.group_id, self.group) {
                (false, None, None) => GroupRef::Scope,
                (false, _, _) => {
                    return Err(InvalidInput::new(
                        "this full-update is scoped to one group: leave group_id and group out",
                    ))
                }
                (true, Some(id), None) => GroupRef::Id(id),
                (true, None, Some(identifier)) => GroupRef::Identifier(identifier),
                (true, _, _) => return Err(InvalidInput::new(
                    "a full-update of a source system needs each line's group: group_id or group \
                     (its identifier), exactly one",
                )),
            };
        Ok(StagedLine {
            line,
            group,
            member,
            member_type: self.ty,
            member_name: self.member_name,
            contributing: self.contributing,
        })
    }
}

/// The deletion-safety rule: large removals wait for a person.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// Hold the operation when it would remove more than this share of a group's active members.
    #[serde(default = "default_max_removed_percent")]
    pub max_removed_percent: f64,
    /// Apply the percentage only to groups with at least this many active members.
    #[serde(default = "default_min_group_size")]
    pub min_group_size: i64,
}

fn default_max_removed_percent() -> f64 {
    20.0
}

fn default_min_group_size() -> i64 {
    100
}

impl Default for Threshold {
    fn default() -> Self {
        Self {
            max_removed_percent: default_max_removed_percent(),
            min_group_size: default_min_group_size(),
        }
    }
}

/// A request's change to the server's deletion threshold: each field left out keeps the server's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThresholdOverride {
    /// Hold the operation when it would remove more than this share of a group's active members.
    #[serde(default)]
    pub max_removed_percent: Option<f64>,
    /// Apply the percentage only to groups with at least this many active members.
    #[serde(default)]
    pub min_group_size: Option<i64>,
}

impl ThresholdOverride {
    /// The threshold this override makes of `base`.
    pub fn over(self, base: Threshold) -> Threshold {
        Threshold {
            max_removed_percent: self.max_removed_percent.unwrap_or(base.max_removed_percent),
            min_group_size: self.min_group_size.unwrap_or(base.min_group_size),
        }
    }
}

impl Threshold {
    pub fn validate(&self) -> Result<(), InvalidInput> {
        if !(0.0..=100.0).contains(&self.max_removed_percent) {
            return Err(InvalidInput::new(
                "threshold.max_removed_percent must be between 0 and 100",
            ));
        }
        if self.min_group_size < 0 {
            return Err(InvalidInput::new(
                "threshold.min_group_size must not be negative",
            ));
        }
        Ok(())
    }

    /// Whether this threshold holds fewer operations than `base` would: a higher share of
    /// removals, or a larger group size before the share applies.
    pub fn loosens(&self, base: &Threshold) -> bool {
        self.max_removed_percent > base.max_removed_percent
            || self.min_group_size > base.min_group_size
    }

    /// Why applying `diff` needs approval, if it does. An empty snapshot for a non-empty group
    /// always does, whatever the threshold.
    pub fn hold_reason(&self, diff: &GroupDiff) -> Option<String> {
        self.hold(
            &format!("group {}", diff.group_id),
            "active members",
            diff.active,
            diff.snapshot,
            diff.to_remove,
        )
    }

    /// Why removing `to_remove` of the `live` items (`noun`) of `scope`, given a snapshot of
    /// `snapshot` lines, needs approval, if it does.
    pub fn hold(
        &self,
        scope: &str,
        noun: &str,
        live: i64,
        snapshot: i64,
        to_remove: i64,
    ) -> Option<String> {
        if snapshot == 0 && live > 0 {
            return Some(format!(
                "the snapshot of {scope} is empty but it has {live} {noun}"
            ));
        }
        if live < self.min_group_size || to_remove == 0 {
            return None;
        }
        let percent = 100.0 * to_remove as f64 / live as f64;
        (percent > self.max_removed_percent).then(|| {
            format!(
                "it would remove {to_remove} of the {live} {noun} of {scope} ({percent:.1}%, more \
                 than the {}% threshold)",
                self.max_removed_percent
            )
        })
    }
}

/// What a full-update would do to one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct GroupDiff {
    pub group_id: ResourceId,
    /// Active members before the apply.
    pub active: i64,
    /// Snapshot lines that name a usable member (0: the snapshot is empty).
    pub snapshot: i64,
    pub to_add: i64,
    pub to_reactivate: i64,
    pub to_remove: i64,
}

/// One change a pending full-update would make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PreviewEntry {
    pub group_id: ResourceId,
    pub member_id: ResourceId,
    pub action: PreviewAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PreviewAction {
    Add,
    Remove,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_override_keeps_the_servers_value_of_each_field_it_leaves_out() {
        let server = Threshold {
            max_removed_percent: 20.0,
            min_group_size: 10,
        };
        let stricter = ThresholdOverride {
            max_removed_percent: Some(5.0),
            min_group_size: None,
        }
        .over(server);
        assert_eq!(stricter.min_group_size, 10);
        assert!(!stricter.loosens(&server));
        let looser = ThresholdOverride {
            max_removed_percent: None,
            min_group_size: Some(1000),
        }
        .over(server);
        assert!(looser.loosens(&server));
    }

    fn diff(active: i64, snapshot: i64, to_remove: i64) -> GroupDiff {
        GroupDiff {
            group_id: ResourceId::generate(),
            active,
            snapshot,
            to_add: 0,
            to_reactivate: 0,
            to_remove,
        }
    }

    #[test]
    fn empty_snapshot_of_a_non_empty_group_always_holds() {
        let t = Threshold::default();
        assert!(t.hold_reason(&diff(3, 0, 3)).is_some());
        assert!(t.hold_reason(&diff(0, 0, 0)).is_none());
    }

    #[test]
    fn percentage_applies_from_the_minimum_group_size() {
        let t = Threshold::default();
        assert!(t.hold_reason(&diff(99, 1, 98)).is_none());
        assert!(t.hold_reason(&diff(100, 80, 20)).is_none());
        assert!(t.hold_reason(&diff(100, 79, 21)).is_some());
    }

    #[test]
    fn a_line_names_its_member_exactly_one_way() {
        let by_id = MemberLine {
            member_id: Some(ResourceId::generate()),
            ..MemberLine::default()
        };
        assert!(by_id.stage(1, false).is_ok());
        let both = MemberLine {
            member_id: Some(ResourceId::generate()),
            source_system: Some("home".into()),
            identifier: Some("a".into()),
            ..MemberLine::default()
        };
        assert!(both.stage(1, false).is_err());
        let groupless = MemberLine {
            member_id: Some(ResourceId::generate()),
            ..MemberLine::default()
        };
        assert!(groupless.stage(1, true).is_err());
    }
}
