//! Nested groups, read at request time: the live edges above one member (one recursive
//! statement, which a cycle cannot loop: `UNION` visits each node once), and every live
//! group-in-group edge, for the cycles. The questions asked of them are answered in
//! `domain::nesting`.

use super::query::Sql;
use super::records::get;
use super::StoreResult;
use crate::domain::nesting::{Ancestry, Edge};
use crate::domain::ResourceId;
use uuid::Uuid;

/// The nodes reached going up from `$1` — through memberships not ended, into groups not
/// deleted (of source `$2`, when it is set), and on from a group only while it is active and not
/// deleted — and the live edges out of each of them.
const ANCESTRY: &str = "WITH RECURSIVE up(id) AS (\
     SELECT $1 \
     UNION \
     SELECT m.group_id FROM up \
     JOIN resource c ON c.id = up.id \
     JOIN group_member m ON m.member_id = up.id AND NOT m.removed \
     JOIN resource g ON g.id = m.group_id AND NOT g.deleted \
       AND ($2 IS NULL OR g.source_system = $2) \
     WHERE up.id = $1 OR (c.active AND NOT c.deleted)) \
   SELECT m.member_id, m.group_id FROM up \
   JOIN resource c ON c.id = up.id \
   JOIN group_member m ON m.member_id = up.id AND NOT m.removed \
   JOIN resource g ON g.id = m.group_id AND NOT g.deleted \
     AND ($2 IS NULL OR g.source_system = $2) \
   WHERE up.id = $1 OR (c.active AND NOT c.deleted)";

/// Every live group-in-group edge whose member group passes its members on (of source `$1`
/// alone, when it is set). It starts from the groups (`resource_group_idx`; the type is written
/// out, so that the partial index matches).
const GROUP_EDGES: &str = "SELECT m.member_id, m.group_id FROM resource c \
   JOIN group_member m ON m.member_id = c.id AND NOT m.removed \
   JOIN resource g ON g.id = m.group_id AND NOT g.deleted \
   WHERE c.type = 2 AND NOT c.deleted AND c.active \
     AND ($1 IS NULL OR (c.source_system = $1 AND g.source_system = $1))";

fn edges(rows: Vec<(Uuid, Uuid)>) -> impl Iterator<Item = Edge> {
    rows.into_iter().map(|(child, parent)| Edge {
        child: ResourceId(child),
        parent: ResourceId(parent),
    })
}

impl super::Store {
    /// The live edges above `member`; with `source`, through groups of that source only.
    pub async fn ancestry(
        &self,
        member: ResourceId,
        source: Option<&str>,
    ) -> StoreResult<Ancestry> {
        let mut tx = self.db().read().await?;
        let select = Sql::new(ANCESTRY)
            .bind(member)
            .bind(source.map(str::to_owned));
        let rows: Vec<(Uuid, Uuid)> = tx.fetch_all(&select).await?;
        if rows.is_empty() {
            get(&mut tx, member).await?;
        }
        Ok(Ancestry::new(member, edges(rows)))
    }

    /// Every live group-in-group edge; with `source`, among groups of that source only.
    pub async fn group_edges(&self, source: Option<&str>) -> StoreResult<Vec<Edge>> {
        let select = Sql::new(GROUP_EDGES).bind(source.map(str::to_owned));
        let rows: Vec<(Uuid, Uuid)> = self.db().read().await?.fetch_all(&select).await?;
        Ok(edges(rows).collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::resource::ResourceType;

    #[test]
    fn the_group_edges_name_the_group_type_the_partial_index_names() {
        let code = ResourceType::Group.code();
        assert!(super::GROUP_EDGES.contains(&format!("c.type = {code} ")));
        for backend in ["postgres", "sqlite"] {
            let migration = std::fs::read_to_string(format!(
                "{}/src/store/{backend}/migrations/0018_group_index.sql",
                env!("CARGO_MANIFEST_DIR")
            ))
            .expect("the migration");
            assert!(migration.contains(&format!("WHERE type = {code} AND NOT deleted")));
        }
    }
}
