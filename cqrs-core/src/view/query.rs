//! Queries over a projection's views by their declared fields: the
//! [`Indexed`] view types, the query a caller builds ([`Query`]), the plan
//! every backend runs the same way, and the [`Cursor`] that pages it.
//!
//! A query filters by equality (`eq`, `is_in`) on a prefix of one of the
//! type's declared indexes, at most ranges and orders by the index's next
//! field, and pages by seeking past the last view of the previous page on
//! (the ordered value, the view's id): a page never repeats a view nor
//! skips one that stayed unchanged, however many are inserted meanwhile.
//! A query no declared index serves is [`QueryError::NotIndexed`], before
//! any read: never a scan of every view by surprise.

use std::any::{Any, TypeId};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};

use super::index::{Condition, Direction, Filter, KeyError, KeyKind, KeyValue, Order};
use super::{Projection, ViewError, ViewStore};

/// The most values one `is_in` filter takes.
pub const MAX_IN: usize = 64;

/// The largest page a query returns.
pub const MAX_LIMIT: usize = 500;

/// A view type whose views are queried by declared fields, with
/// `#[derive(Indexed)]` and `#[indexes((customer, placed_at), placed_at)]`
/// (each index its fields in order, or one field).
pub trait Indexed: Projection {
    /// One [`Field`](super::Field) handle per declared field.
    type Fields: Copy;

    /// The handles (`OrderSummary::FIELDS.customer`).
    const FIELDS: Self::Fields;

    /// The declared indexes.
    const INDEXES: &'static [Index];

    /// The view's values of every declared field, in the order of
    /// [`declared`](Index::declared).
    fn keys(&self) -> Result<Keys, KeyError>;
}

/// An [`Indexed`] view type, registered by `#[derive(Indexed)]`: how a
/// projection's batch finds the keys of its views without naming the
/// trait (a projection need not be indexed).
#[doc(hidden)]
pub struct IndexRegistration {
    type_id: fn() -> TypeId,
    keys: KeysFn,
    indexes: &'static [Index],
}

impl IndexRegistration {
    /// The registration of `V`.
    pub const fn of<V: Indexed>() -> Self {
        Self {
            type_id: crate::__private::type_id::<V>,
            keys: keys_of::<V>,
            indexes: V::INDEXES,
        }
    }

    fn of_type<V: 'static>() -> Option<&'static IndexRegistration> {
        inventory::iter::<IndexRegistration>
            .into_iter()
            .find(|registration| (registration.type_id)() == TypeId::of::<V>())
    }

    /// The keys function of view type `V`, if it is indexed.
    pub(crate) fn find<V: 'static>() -> Option<KeysFn> {
        Self::of_type::<V>().map(|registration| registration.keys)
    }

    /// The declared indexes of view type `V` (none if it is not indexed).
    pub(crate) fn indexes_of<V: 'static>() -> &'static [Index] {
        Self::of_type::<V>().map_or(&[], |registration| registration.indexes)
    }
}

/// A view's value of each declared field.
pub type Keys = Vec<(&'static str, KeyValue)>;

/// What computes a view's keys, given the view (`None` if it is not of
/// the registered type).
pub(crate) type KeysFn = fn(&dyn Any) -> Option<Result<Keys, KeyError>>;

fn keys_of<V: Indexed>(view: &dyn Any) -> Option<Result<Keys, KeyError>> {
    view.downcast_ref::<V>().map(Indexed::keys)
}

impl fmt::Debug for IndexRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IndexRegistration").finish_non_exhaustive()
    }
}

inventory::collect!(IndexRegistration);

/// One declared index: its fields, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Index {
    /// The fields, each with how its values compare.
    pub fields: &'static [(&'static str, KeyKind)],
}

impl Index {
    /// Every field of `indexes`, each once, in the order first declared.
    pub fn declared(indexes: &[Index]) -> Vec<(&'static str, KeyKind)> {
        let mut fields: Vec<(&'static str, KeyKind)> = Vec::new();
        for &(name, kind) in indexes.iter().flat_map(|index| index.fields) {
            if fields.iter().all(|(known, _)| *known != name) {
                fields.push((name, kind));
            }
        }
        fields
    }
}

/// Why a query was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// No declared index serves the query's filters and order.
    #[error("no index of {projection} serves {wanted}: {fix}")]
    NotIndexed {
        /// The projection.
        projection: &'static str,
        /// The filters and order, as a reader would write them.
        wanted: String,
        /// The index that would serve it, for `#[indexes(..)]`.
        fix: String,
    },

    /// Two filters on one field.
    #[error("{projection}: the query filters `{field}` twice; combine them into one")]
    FilteredTwice {
        /// The projection.
        projection: &'static str,
        /// The field.
        field: &'static str,
    },

    /// A filter's value is not one an index keeps (a NaN, a `u64` beyond
    /// `i64::MAX`, text with NUL).
    #[error("{projection}: the value of the filter on `{field}` cannot be a key: {source}")]
    Key {
        /// The projection.
        projection: &'static str,
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        #[source]
        source: KeyError,
    },

    /// An `is_in` with more than [`MAX_IN`] values.
    #[error("{projection}: `{field}` is filtered by {count} values, more than {MAX_IN}")]
    TooManyValues {
        /// The projection.
        projection: &'static str,
        /// The field.
        field: &'static str,
        /// How many values.
        count: usize,
    },

    /// A limit above [`MAX_LIMIT`].
    #[error("a page holds at most {MAX_LIMIT} views, not {0}")]
    Limit(usize),

    /// A cursor that does not decode.
    #[error("the cursor is not one a query made: {0}")]
    Cursor(String),

    /// A cursor made by a query of another shape (other fields, order or
    /// projection).
    #[error("the cursor belongs to another query")]
    CursorMismatch,

    /// The views could not be read.
    #[error(transparent)]
    View(#[from] ViewError),
}

/// Where the next page starts: after the last view of the previous one.
/// Shown (and read back with `parse`) as a short URL-safe text, for
/// `?after=` in a link.
#[derive(Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The query's shape, which it must match.
    shape: u64,
    /// The last view's ordered value, if the query orders by a field.
    key: Option<KeyValue>,
    /// The last view's id.
    view_id: String,
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Cursor").field(&self.to_string()).finish()
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = serde_json::json!([
            format!("{:016x}", self.shape),
            self.key.as_ref().map(kind_and_value),
            self.view_id,
        ]);
        for byte in json.to_string().bytes() {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

fn kind_and_value(key: &KeyValue) -> serde_json::Value {
    let kind = match key {
        KeyValue::Null => "null",
        KeyValue::Bool(_) => "bool",
        KeyValue::Int(_) => "int",
        KeyValue::Float(_) => "float",
        KeyValue::Text(_) => "text",
    };
    serde_json::json!([kind, key.to_json()])
}

impl std::str::FromStr for Cursor {
    type Err = QueryError;

    fn from_str(text: &str) -> Result<Self, QueryError> {
        let bad = |reason: &str| QueryError::Cursor(reason.to_owned());
        if !text.len().is_multiple_of(2) || text.len() > 2_048 {
            return Err(bad("its length"));
        }
        let bytes = (0..text.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(text.get(at..at + 2).unwrap_or("zz"), 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| bad("not hexadecimal"))?;
        let json: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| bad("not JSON"))?;
        let [shape, key, view_id] = json.as_array().map(Vec::as_slice).unwrap_or_default() else {
            return Err(bad("its fields"));
        };
        let shape = shape
            .as_str()
            .and_then(|shape| u64::from_str_radix(shape, 16).ok())
            .ok_or_else(|| bad("its shape"))?;
        let view_id = view_id
            .as_str()
            .ok_or_else(|| bad("its view id"))?
            .to_owned();
        let key = match key {
            serde_json::Value::Null => None,
            serde_json::Value::Array(pair) => {
                let kind = match pair.first().and_then(serde_json::Value::as_str) {
                    Some("bool") => KeyKind::Bool,
                    Some("int") => KeyKind::Int,
                    Some("float") => KeyKind::Float,
                    Some("text") => KeyKind::Text,
                    _ => return Err(bad("its key's kind")),
                };
                let value = pair.get(1).ok_or_else(|| bad("its key"))?;
                Some(KeyValue::from_json(kind, value).ok_or_else(|| bad("its key"))?)
            }
            _ => return Err(bad("its key")),
        };
        Ok(Cursor {
            shape,
            key,
            view_id,
        })
    }
}

/// One page of a query's views, and where the next one starts.
#[derive(Debug)]
pub struct Page<V> {
    /// The views, by id, in the query's order.
    pub items: Vec<(String, V)>,
    /// Where the next page starts; `None` when this page was not full
    /// (after a full one, the next page may be empty).
    pub next: Option<Cursor>,
}

/// A query on the views of `V`, from [`ViewStore::query`]: filters, an
/// order, a limit and a cursor, then [`fetch`](Self::fetch).
///
/// ```ignore
/// let f = OrderSummary::FIELDS;
/// let page = app.views().query::<OrderSummary>()
///     .filter(f.customer.eq("c-17"))
///     .order_by(f.placed_at.desc())
///     .limit(20)
///     .after(cursor.as_ref())
///     .fetch().await?;
/// ```
pub struct Query<'a, V> {
    store: &'a ViewStore,
    filters: Vec<Filter<V>>,
    order: Option<Order<V>>,
    limit: usize,
    after: Option<Cursor>,
    view: PhantomData<fn() -> V>,
}

impl<V> fmt::Debug for Query<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Query")
            .field("filters", &self.filters)
            .field("order", &self.order)
            .field("limit", &self.limit)
            .field("after", &self.after)
            .finish()
    }
}

impl<'a, V: Indexed> Query<'a, V> {
    pub(super) fn new(store: &'a ViewStore) -> Self {
        Self {
            store,
            filters: Vec::new(),
            order: None,
            limit: 50,
            after: None,
            view: PhantomData,
        }
    }

    /// Keeps the views this filter lets through (every filter applies).
    pub fn filter(mut self, filter: Filter<V>) -> Self {
        self.filters.push(filter);
        self
    }

    /// Orders the views; by default by the ranged field if a filter ranges
    /// one, else by view id. Views with the same value come by view id,
    /// in the same direction.
    pub fn order_by(mut self, order: Order<V>) -> Self {
        self.order = Some(order);
        self
    }

    /// At most this many views per page (50 by default, at most
    /// [`MAX_LIMIT`]; 0 gives an empty page).
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Starts after the view the cursor names (the previous page's
    /// [`Page::next`]).
    pub fn after(mut self, cursor: Option<&Cursor>) -> Self {
        self.after = cursor.cloned();
        self
    }

    /// Runs the query: one page.
    pub async fn fetch(self) -> Result<Page<V>, QueryError> {
        let plan = plan(
            V::NAME,
            V::INDEXES,
            &self.filters,
            self.order.as_ref(),
            self.limit,
            self.after,
        )?;
        if plan.limit == 0 {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        }
        let found = self.store.backend().query(&plan).await?;
        let full = found.len() == plan.limit;
        let mut items = Vec::with_capacity(found.len());
        for (view_id, json) in found {
            let view = super::decode::<V>(&view_id, &json)?;
            items.push((view_id, view));
        }
        let next = match items.last() {
            Some((view_id, view)) if full => {
                // The ordered value, from the view as its keys were made.
                let key = match &plan.ordered {
                    Some(ordering) => view.keys().ok().and_then(|keys| {
                        keys.into_iter()
                            .find(|(field, _)| *field == ordering.field)
                            .map(|(_, value)| value)
                    }),
                    None => None,
                };
                Some(Cursor {
                    shape: plan.shape,
                    key,
                    view_id: view_id.clone(),
                })
            }
            _ => None,
        };
        Ok(Page { items, next })
    }
}

/// A query as every backend runs it: the projection, which fields are
/// equal to which values (each field one of its values), which one is
/// ranged and ordered, and where the page starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// The projection's name (the backend reads its serving version).
    pub(crate) projection: &'static str,
    /// Every declared field and its kind: what a view's keys hold.
    pub(crate) fields: Vec<(&'static str, KeyKind)>,
    /// The fields filtered by equality, each with its values (one or more).
    pub(crate) equal: Vec<(&'static str, Vec<KeyValue>)>,
    /// The field ranged or ordered by, with its bounds (unbounded when it
    /// only orders); `None` orders by view id alone.
    pub(crate) ordered: Option<Ordering>,
    /// Which way.
    pub(crate) direction: Direction,
    /// How many views.
    pub(crate) limit: usize,
    /// Past this (ordered value, view id) in the query's direction.
    pub(crate) after: Option<(Option<KeyValue>, String)>,
    /// The query's shape, for cursors.
    pub(crate) shape: u64,
}

/// The field a plan ranges or orders by.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ordering {
    pub(crate) field: &'static str,
    pub(crate) kind: KeyKind,
    pub(crate) lower: Bound<KeyValue>,
    pub(crate) upper: Bound<KeyValue>,
}

impl Plan {
    /// Whether a view with these keys (by field) and id is one of the
    /// query's views past its cursor: the rule every backend's SQL states,
    /// and the memory backend runs.
    pub(crate) fn admits(
        &self,
        keys: &serde_json::Map<String, serde_json::Value>,
        view_id: &str,
    ) -> bool {
        let value = |field: &str| {
            let kind = self
                .fields
                .iter()
                .find(|(name, _)| *name == field)
                .map(|(_, kind)| *kind)?;
            KeyValue::from_json(kind, keys.get(field)?)
        };
        let equal = self.equal.iter().all(|(field, values)| {
            value(field).is_some_and(|found| found != KeyValue::Null && values.contains(&found))
        });
        if !equal {
            return false;
        }
        let ordered = self
            .ordered
            .as_ref()
            .map(|ordering| (ordering, value(ordering.field)));
        if let Some((ordering, found)) = &ordered {
            let Some(found) = found.as_ref().filter(|found| **found != KeyValue::Null) else {
                return false;
            };
            if !(ordering.lower.as_ref(), ordering.upper.as_ref()).contains(found) {
                return false;
            }
        }
        match &self.after {
            None => true,
            Some((key, after_id)) => {
                let here = (ordered.and_then(|(_, found)| found), view_id.as_bytes());
                let there = (key.clone(), after_id.as_bytes());
                match self.direction {
                    Direction::Ascending => here > there,
                    Direction::Descending => here < there,
                }
            }
        }
    }

    /// The ordered value of a view with these keys, for its cursor.
    pub(crate) fn key_of(
        &self,
        keys: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<KeyValue> {
        let ordering = self.ordered.as_ref()?;
        KeyValue::from_json(ordering.kind, keys.get(ordering.field)?)
    }
}

/// Whether the views a version already holds were written with keys of
/// the fields its type declares now (`sample`: one view's keys, if it
/// holds any): a version whose views were written before its type
/// declared them, or with other fields, would answer queries without
/// them, so it refuses to start until it is rebuilt as a new version.
pub(crate) fn check_keyed(
    key: &str,
    indexes: &[Index],
    sample: Option<Option<String>>,
) -> Result<(), ViewError> {
    let Some(keys) = sample else {
        return Ok(());
    };
    let declared: std::collections::BTreeSet<&str> = Index::declared(indexes)
        .into_iter()
        .map(|(field, _)| field)
        .collect();
    let kept: Option<std::collections::BTreeSet<String>> = keys
        .as_deref()
        .and_then(|keys| serde_json::from_str::<serde_json::Value>(keys).ok())
        .and_then(|keys| keys.as_object().map(|keys| keys.keys().cloned().collect()));
    let same = kept.as_ref().is_some_and(|kept| {
        kept.len() == declared.len() && kept.iter().all(|field| declared.contains(field.as_str()))
    });
    if same {
        return Ok(());
    }
    let found = kept.map_or_else(
        || "views without keys".to_owned(),
        |kept| format!("views keyed by {kept:?}"),
    );
    Err(ViewError::Unindexed {
        projection: key.to_owned(),
        reason: format!(
            "it holds {found}, but its type declares {declared:?}: declare a new version \
             (#[projection(version = ..)]), which builds its views with keys beside this one"
        ),
    })
}

/// Plans a query against the declared indexes.
pub(crate) fn plan<V>(
    projection: &'static str,
    indexes: &'static [Index],
    filters: &[Filter<V>],
    order: Option<&Order<V>>,
    limit: usize,
    after: Option<Cursor>,
) -> Result<Plan, QueryError> {
    if limit > MAX_LIMIT {
        return Err(QueryError::Limit(limit));
    }
    let mut equal: Vec<(&'static str, Vec<KeyValue>)> = Vec::new();
    let mut range: Option<(&'static str, Bound<KeyValue>, Bound<KeyValue>)> = None;
    for filter in filters {
        let field = filter.field;
        let twice = equal.iter().any(|(known, _)| *known == field)
            || range.as_ref().is_some_and(|(known, ..)| *known == field);
        if twice {
            return Err(QueryError::FilteredTwice { projection, field });
        }
        match &filter.condition {
            Err(source) => {
                return Err(QueryError::Key {
                    projection,
                    field,
                    source: source.clone(),
                });
            }
            Ok(Condition::In(values)) => {
                if values.len() > MAX_IN {
                    return Err(QueryError::TooManyValues {
                        projection,
                        field,
                        count: values.len(),
                    });
                }
                // A `None` of an `Option` field matches nothing.
                let mut values: Vec<KeyValue> = values
                    .iter()
                    .filter(|value| **value != KeyValue::Null)
                    .cloned()
                    .collect();
                values.sort();
                values.dedup();
                equal.push((field, values));
            }
            Ok(Condition::Range(lower, upper)) => {
                if let Some((other, ..)) = &range {
                    let wanted = format!("ranges on `{other}` and `{field}`");
                    return Err(QueryError::NotIndexed {
                        projection,
                        wanted,
                        fix: "a query ranges one field; filter the other by equality".to_owned(),
                    });
                }
                range = Some((field, lower.clone(), upper.clone()));
            }
        }
    }
    let ordered_field = order
        .map(|order| order.field)
        .or(range.as_ref().map(|(field, ..)| *field));
    if let (Some((ranged, ..)), Some(order)) = (&range, order)
        && *ranged != order.field
    {
        return Err(QueryError::NotIndexed {
            projection,
            wanted: describe(&equal, Some(ranged), Some(order.field)),
            fix: format!("a query orders by the field it ranges: order by `{ranged}`"),
        });
    }
    let direction = order.map_or(Direction::Ascending, |order| order.direction);
    let served = indexes.iter().find(|index| {
        let (prefix, rest) = index.fields.split_at(equal.len().min(index.fields.len()));
        let prefix_equal = prefix.len() == equal.len()
            && prefix
                .iter()
                .all(|(field, _)| equal.iter().any(|(known, _)| known == field));
        prefix_equal
            && ordered_field
                .is_none_or(|field| rest.first().is_some_and(|(next, _)| *next == field))
    });
    let Some(index) = served else {
        let mut fix: Vec<&str> = equal.iter().map(|(field, _)| *field).collect();
        fix.extend(ordered_field);
        return Err(QueryError::NotIndexed {
            projection,
            wanted: describe(
                &equal,
                range.as_ref().map(|(field, ..)| field),
                order.map(|order| order.field),
            ),
            fix: format!("add ({}) to the view type's #[indexes(..)]", fix.join(", ")),
        });
    };
    let ordered = ordered_field.map(|field| {
        let kind = index
            .fields
            .iter()
            .find(|(name, _)| *name == field)
            .map_or(KeyKind::Text, |(_, kind)| *kind);
        let (lower, upper) = match &range {
            Some((_, lower, upper)) => (lower.clone(), upper.clone()),
            None => (Bound::Unbounded, Bound::Unbounded),
        };
        Ordering {
            field,
            kind,
            lower,
            upper,
        }
    });
    equal.sort_by_key(|(field, _)| *field);
    let shape = shape(
        projection,
        &equal,
        ordered.as_ref(),
        direction,
        range.is_some(),
    );
    let after = match after {
        None => None,
        Some(cursor) if cursor.shape != shape => return Err(QueryError::CursorMismatch),
        Some(cursor) => {
            let fits = match (&ordered, &cursor.key) {
                (None, None) => true,
                (Some(ordering), Some(key)) => {
                    KeyValue::from_json(ordering.kind, &key.to_json()).as_ref() == Some(key)
                }
                _ => false,
            };
            if !fits {
                return Err(QueryError::CursorMismatch);
            }
            Some((cursor.key, cursor.view_id))
        }
    };
    // An empty `is_in` matches nothing.
    let limit = if equal.iter().any(|(_, values)| values.is_empty()) {
        0
    } else {
        limit
    };
    Ok(Plan {
        projection,
        fields: Index::declared(indexes),
        equal,
        ordered,
        direction,
        limit,
        after,
        shape,
    })
}

/// The filters and order as a reader would write them.
fn describe(
    equal: &[(&'static str, Vec<KeyValue>)],
    ranged: Option<&&'static str>,
    order: Option<&'static str>,
) -> String {
    let mut parts: Vec<String> = equal
        .iter()
        .map(|(field, values)| {
            if values.len() == 1 {
                format!("`{field} =`")
            } else {
                format!("`{field} IN`")
            }
        })
        .collect();
    parts.extend(ranged.map(|field| format!("a range on `{field}`")));
    parts.extend(order.map(|field| format!("order by `{field}`")));
    if parts.is_empty() {
        "no filter".to_owned()
    } else {
        parts.join(", ")
    }
}

/// A hash of what a cursor must match: the projection, the filtered
/// fields and how, the order and its direction; not the values.
fn shape(
    projection: &str,
    equal: &[(&'static str, Vec<KeyValue>)],
    ordered: Option<&Ordering>,
    direction: Direction,
    ranged: bool,
) -> u64 {
    let mut hasher = Fnv(0xcbf2_9ce4_8422_2325);
    projection.hash(&mut hasher);
    for (field, _) in equal {
        field.hash(&mut hasher);
    }
    ordered.map(|ordering| ordering.field).hash(&mut hasher);
    direction.hash(&mut hasher);
    ranged.hash(&mut hasher);
    hasher.finish()
}

/// FNV-1a: the same hash in every build, so cursors outlive a deploy.
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
