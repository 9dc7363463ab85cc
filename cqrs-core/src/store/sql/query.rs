//! A query's plan as SQL, for both dialects: the serving version's views
//! whose keys match, past the cursor, in order, one page. The text names
//! fields the view type declared (Rust identifiers, checked again here)
//! and binds every value.

use std::fmt::Write as _;
use std::ops::Bound;

use super::{Dialect, TablePrefix};
use crate::view::{Direction, Index, KeyKind, KeyValue, Plan, ViewError};

/// A value bound to a query, in placeholder order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Bind {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// The SQL of a plan and what it binds.
#[derive(Debug)]
pub(crate) struct Rendered {
    pub(crate) sql: String,
    pub(crate) binds: Vec<Bind>,
}

/// The statement that reads one page of `plan` from the views of version
/// `key`, if it is still the serving one: `view_id` and the state as text.
/// The key is written as a literal, as the indexes' predicates are: a
/// partial index serves only a query that states its predicate, and a
/// bound parameter is not one to the planner. A key no longer serving (a
/// switch since it was read) gives an empty page.
pub(crate) fn render(
    plan: &Plan,
    key: &str,
    prefix: &TablePrefix,
    dialect: Dialect,
) -> Result<Rendered, ViewError> {
    let mut query = Builder {
        dialect,
        sql: String::new(),
        binds: Vec::new(),
    };
    let cast = if dialect == Dialect::Postgres {
        "::TEXT"
    } else {
        ""
    };
    let _ = write!(
        query.sql,
        "SELECT view_id, state{cast} FROM {views} WHERE projection = {key} AND keys IS NOT NULL \
         AND COALESCE((SELECT serving FROM {projections} WHERE name = {name}), {name}) = {key}",
        views = prefix.expand("{p}views"),
        projections = prefix.expand("{p}projections"),
        key = literal(key),
        name = literal(plan.projection),
    );
    for (field, values) in &plan.equal {
        let kind = kind_of(plan, field)?;
        let expression = query.key(field, kind);
        let mut placeholders = Vec::with_capacity(values.len());
        for value in values {
            placeholders.push(query.bind(value)?);
        }
        let _ = write!(
            query.sql,
            " AND {expression} IN ({})",
            placeholders.join(", ")
        );
    }
    let view_id = query.view_id();
    let ordered = match &plan.ordered {
        Some(ordering) => {
            let expression = query.key(ordering.field, ordering.kind);
            for (bound, strict, loose) in
                [(&ordering.lower, ">", ">="), (&ordering.upper, "<", "<=")]
            {
                let (operator, value) = match bound {
                    Bound::Included(value) => (loose, value),
                    Bound::Excluded(value) => (strict, value),
                    Bound::Unbounded => continue,
                };
                let placeholder = query.bind(value)?;
                let _ = write!(query.sql, " AND {expression} {operator} {placeholder}");
            }
            Some(expression)
        }
        None => None,
    };
    let past = match plan.direction {
        Direction::Ascending => ">",
        Direction::Descending => "<",
    };
    if let Some((key, after_id)) = &plan.after {
        let id = query.bind(&KeyValue::Text(after_id.clone()))?;
        match (&ordered, key) {
            // A row value, which both databases seek in the index.
            (Some(expression), Some(key)) => {
                let value = query.bind(key)?;
                let _ = write!(
                    query.sql,
                    " AND ({expression}, {view_id}) {past} ({value}, {id})"
                );
            }
            (None, _) => {
                let _ = write!(query.sql, " AND {view_id} {past} {id}");
            }
            // The plan checked the cursor against the order.
            (Some(_), None) => return Err(corrupt_cursor(plan)),
        }
    }
    let direction = match plan.direction {
        Direction::Ascending => "ASC",
        Direction::Descending => "DESC",
    };
    query.sql.push_str(" ORDER BY ");
    if let Some(expression) = &ordered {
        let _ = write!(query.sql, "{expression} {direction}, ");
    }
    let _ = write!(query.sql, "{view_id} {direction} LIMIT {}", plan.limit);
    Ok(Rendered {
        sql: query.sql,
        binds: query.binds,
    })
}

/// The statements that make the indexes of version `key` of a projection:
/// one partial index per declared index, on the keys as its queries read
/// them and the view id, named after a hash of what it indexes, so a
/// restart finds it made (`IF NOT EXISTS`) and a changed declaration makes
/// another.
pub(crate) fn index_statements(
    indexes: &[Index],
    key: &str,
    prefix: &TablePrefix,
    dialect: Dialect,
) -> Vec<String> {
    let builder = Builder {
        dialect,
        sql: String::new(),
        binds: Vec::new(),
    };
    let mut statements = Vec::new();
    for index in indexes {
        let mut columns: Vec<String> = index
            .fields
            .iter()
            .map(|(field, kind)| builder.key(field, *kind))
            .collect();
        columns.push(builder.view_id().to_owned());
        let columns = columns.join(", ");
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in key.bytes().chain([0]).chain(columns.bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        let name = prefix.expand(&format!("{{p}}vx_{hash:016x}"));
        let concurrently = match dialect {
            Dialect::Postgres => "CONCURRENTLY ",
            Dialect::Sqlite => "",
        };
        statements.push(format!(
            "CREATE INDEX {concurrently}IF NOT EXISTS {name} ON {views} ({columns}) \
             WHERE projection = {key}",
            views = prefix.expand("{p}views"),
            key = literal(key),
        ));
    }
    statements
}

/// Text as an SQL literal: quoted, its quotes doubled (both databases
/// read it so, PostgreSQL with `standard_conforming_strings`, its default).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn kind_of(plan: &Plan, field: &str) -> Result<KeyKind, ViewError> {
    plan.fields
        .iter()
        .find(|(name, _)| *name == field)
        .map(|(_, kind)| *kind)
        .ok_or_else(|| corrupt_cursor(plan))
}

fn corrupt_cursor(plan: &Plan) -> ViewError {
    ViewError::Corrupt {
        processor: plan.projection.to_owned(),
        reason: "a query plan that does not fit its fields".to_owned(),
    }
}

struct Builder {
    dialect: Dialect,
    sql: String,
    binds: Vec<Bind>,
}

impl Builder {
    fn placeholder(&self, index: usize) -> String {
        match self.dialect {
            Dialect::Postgres => format!("${index}"),
            Dialect::Sqlite => format!("?{index}"),
        }
    }

    /// Binds a value, as its kind compares in SQL; its placeholder.
    fn bind(&mut self, value: &KeyValue) -> Result<String, ViewError> {
        let bind = match value {
            KeyValue::Text(text) => Bind::Text(text.clone()),
            KeyValue::Int(int) => Bind::Int(*int),
            KeyValue::Float(float) => Bind::Float(*float),
            // SQLite's json_extract reads a JSON boolean as 0 or 1.
            KeyValue::Bool(flag) if self.dialect == Dialect::Sqlite => Bind::Int(i64::from(*flag)),
            KeyValue::Bool(flag) => Bind::Bool(*flag),
            KeyValue::Null => {
                return Err(ViewError::Corrupt {
                    processor: String::new(),
                    reason: "a query compares with a missing value".to_owned(),
                });
            }
        };
        self.binds.push(bind);
        Ok(self.placeholder(self.binds.len()))
    }

    /// A declared field's value, as its kind compares: text by bytes.
    fn key(&self, field: &str, kind: KeyKind) -> String {
        // Field names come from `#[derive(Indexed)]`: Rust identifiers.
        let field: String = field
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        match (self.dialect, kind) {
            (Dialect::Sqlite, _) => format!("json_extract(keys, '$.{field}')"),
            (Dialect::Postgres, KeyKind::Text) => format!("((keys->>'{field}') COLLATE \"C\")"),
            (Dialect::Postgres, KeyKind::Int) => format!("((keys->>'{field}')::BIGINT)"),
            (Dialect::Postgres, KeyKind::Float) => format!("((keys->>'{field}')::FLOAT8)"),
            (Dialect::Postgres, KeyKind::Bool) => format!("((keys->>'{field}')::BOOLEAN)"),
        }
    }

    /// The view id, compared by bytes as the keys' text is.
    fn view_id(&self) -> &'static str {
        match self.dialect {
            Dialect::Postgres => "(view_id COLLATE \"C\")",
            Dialect::Sqlite => "view_id",
        }
    }
}
