//! What a view is indexed by: the values of its declared fields
//! ([`KeyValue`], of a [`KeyKind`]), the types that can be one
//! ([`IndexKey`]), and the typed handles a query names them by
//! ([`Field`]), which exist only for the fields a view type declares.

use std::cmp::Ordering;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Bound;

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

/// How a kind of key compares, the same on every backend: text by its
/// UTF-8 bytes, integers and floats by value, `false` before `true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// A `String` or `Uuid`.
    Text,
    /// An integer, a time (microseconds since the Unix epoch) or a date
    /// (days since the epoch).
    Int,
    /// A finite float.
    Float,
    /// A `bool`.
    Bool,
}

impl KeyKind {
    /// The kind as the backends name it in index definitions.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Text => "text",
            KeyKind::Int => "int",
            KeyKind::Float => "float",
            KeyKind::Bool => "bool",
        }
    }
}

/// One field's value as a view's index keeps it.
#[derive(Debug, Clone)]
pub enum KeyValue {
    /// An `Option` field's `None`: no filter matches it.
    Null,
    /// A `bool`.
    Bool(bool),
    /// An integer, time or date.
    Int(i64),
    /// A finite float, `-0.0` kept as `0.0`.
    Float(f64),
    /// Text.
    Text(String),
}

impl KeyValue {
    fn rank(&self) -> u8 {
        match self {
            KeyValue::Null => 0,
            KeyValue::Bool(_) => 1,
            KeyValue::Int(_) => 2,
            KeyValue::Float(_) => 3,
            KeyValue::Text(_) => 4,
        }
    }

    /// The value as the JSON of a view's keys.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        match self {
            KeyValue::Null => serde_json::Value::Null,
            KeyValue::Bool(value) => (*value).into(),
            KeyValue::Int(value) => (*value).into(),
            KeyValue::Float(value) => (*value).into(),
            KeyValue::Text(value) => value.as_str().into(),
        }
    }

    /// The value of `kind` in a view's keys JSON; `None` if it is not one.
    pub(crate) fn from_json(kind: KeyKind, json: &serde_json::Value) -> Option<Self> {
        Some(match (kind, json) {
            (_, serde_json::Value::Null) => KeyValue::Null,
            (KeyKind::Bool, serde_json::Value::Bool(value)) => KeyValue::Bool(*value),
            (KeyKind::Int, value) => KeyValue::Int(value.as_i64()?),
            (KeyKind::Float, value) => KeyValue::Float(value.as_f64()?),
            (KeyKind::Text, serde_json::Value::String(value)) => KeyValue::Text(value.clone()),
            _ => return None,
        })
    }
}

impl PartialEq for KeyValue {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for KeyValue {}

impl PartialOrd for KeyValue {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KeyValue {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (KeyValue::Bool(a), KeyValue::Bool(b)) => a.cmp(b),
            (KeyValue::Int(a), KeyValue::Int(b)) => a.cmp(b),
            (KeyValue::Float(a), KeyValue::Float(b)) => a.total_cmp(b),
            (KeyValue::Text(a), KeyValue::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
            (a, b) => a.rank().cmp(&b.rank()),
        }
    }
}

/// A value a field of a view held that no index can keep.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}")]
pub struct KeyError {
    /// What is wrong with it.
    pub reason: String,
}

/// A type a view's field can be indexed by: text (`String`, `Uuid`),
/// integers (up to `i64`; a `u64` above `i64::MAX` is refused), `bool`,
/// finite floats, `DateTime<Utc>` (to the microsecond), `NaiveDate`, and
/// `Option`s of them.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an index key",
    label = "not an index key",
    note = "index a `String`, `Uuid`, integer, `bool`, float, `DateTime<Utc>`, `NaiveDate` or an `Option` of one; for anything else, index a field computed from it"
)]
pub trait IndexKey {
    /// How its values compare.
    const KIND: KeyKind;

    /// Its value in the index.
    fn key(&self) -> Result<KeyValue, KeyError>;
}

/// An index key that is always set, which a query may order and range by.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot order or range a query",
    label = "not always set",
    note = "order and range by a field that is always set; an `Option` field is filtered with `eq` or `is_in` only"
)]
pub trait Ordered: IndexKey {}

macro_rules! integer_keys {
    ($($ty:ty),*) => {$(
        impl IndexKey for $ty {
            const KIND: KeyKind = KeyKind::Int;

            fn key(&self) -> Result<KeyValue, KeyError> {
                Ok(KeyValue::Int(i64::from(*self)))
            }
        }

        impl Ordered for $ty {}
    )*};
}

integer_keys!(i8, i16, i32, i64, u8, u16, u32);

impl IndexKey for u64 {
    const KIND: KeyKind = KeyKind::Int;

    fn key(&self) -> Result<KeyValue, KeyError> {
        i64::try_from(*self)
            .map(KeyValue::Int)
            .map_err(|_| KeyError {
                reason: format!("{self} is beyond what an index keeps (i64::MAX)"),
            })
    }
}

impl Ordered for u64 {}

macro_rules! float_keys {
    ($($ty:ty),*) => {$(
        impl IndexKey for $ty {
            const KIND: KeyKind = KeyKind::Float;

            fn key(&self) -> Result<KeyValue, KeyError> {
                let value = f64::from(*self);
                if !value.is_finite() {
                    return Err(KeyError {
                        reason: format!("{value} is not a finite number"),
                    });
                }
                // -0.0 and 0.0 are one key on every backend.
                Ok(KeyValue::Float(value + 0.0))
            }
        }

        impl Ordered for $ty {}
    )*};
}

float_keys!(f32, f64);

impl IndexKey for bool {
    const KIND: KeyKind = KeyKind::Bool;

    fn key(&self) -> Result<KeyValue, KeyError> {
        Ok(KeyValue::Bool(*self))
    }
}

impl Ordered for bool {}

impl IndexKey for String {
    const KIND: KeyKind = KeyKind::Text;

    fn key(&self) -> Result<KeyValue, KeyError> {
        if self.contains('\0') {
            return Err(KeyError {
                reason: "text with NUL, which PostgreSQL cannot keep".to_owned(),
            });
        }
        Ok(KeyValue::Text(self.clone()))
    }
}

impl Ordered for String {}

impl IndexKey for Uuid {
    const KIND: KeyKind = KeyKind::Text;

    fn key(&self) -> Result<KeyValue, KeyError> {
        Ok(KeyValue::Text(self.to_string()))
    }
}

impl Ordered for Uuid {}

impl IndexKey for DateTime<Utc> {
    const KIND: KeyKind = KeyKind::Int;

    fn key(&self) -> Result<KeyValue, KeyError> {
        Ok(KeyValue::Int(self.timestamp_micros()))
    }
}

impl Ordered for DateTime<Utc> {}

impl IndexKey for NaiveDate {
    const KIND: KeyKind = KeyKind::Int;

    fn key(&self) -> Result<KeyValue, KeyError> {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
        Ok(KeyValue::Int((*self - epoch).num_days()))
    }
}

impl Ordered for NaiveDate {}

impl<T: IndexKey> IndexKey for Option<T> {
    const KIND: KeyKind = T::KIND;

    fn key(&self) -> Result<KeyValue, KeyError> {
        self.as_ref().map_or(Ok(KeyValue::Null), IndexKey::key)
    }
}

/// A declared field of view type `V`, of type `T`: what a query filters and
/// orders by. `#[derive(Indexed)]` makes one per field its `#[indexes(..)]`
/// names (`OrderSummary::FIELDS.customer`), so a field that is not
/// declared has no handle, and a query on it does not compile.
pub struct Field<V, T> {
    name: &'static str,
    types: PhantomData<fn() -> (V, T)>,
}

impl<V, T> Field<V, T> {
    /// The handle of field `name`; for the derive.
    #[doc(hidden)]
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            types: PhantomData,
        }
    }

    /// The field's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl<V, T> Clone for Field<V, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<V, T> Copy for Field<V, T> {}

impl<V, T> fmt::Debug for Field<V, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Field").field(&self.name).finish()
    }
}

impl<V, T: IndexKey> Field<V, T> {
    /// Views whose field equals `value` (an `Option` field's `None`
    /// matches nothing, as SQL's `NULL` does).
    pub fn eq(self, value: impl Into<T>) -> Filter<V> {
        self.filter(|key| Ok(Condition::In(vec![key?])), value.into())
    }

    /// Views whose field equals one of `values` (at most
    /// [`MAX_IN`](super::MAX_IN); none matches nothing).
    pub fn is_in<I: Into<T>>(self, values: impl IntoIterator<Item = I>) -> Filter<V> {
        let keys: Result<Vec<KeyValue>, KeyError> =
            values.into_iter().map(|value| value.into().key()).collect();
        Filter {
            field: self.name,
            condition: keys.map(Condition::In),
            view: PhantomData,
        }
    }

    fn filter(
        self,
        condition: impl FnOnce(Result<KeyValue, KeyError>) -> Result<Condition, KeyError>,
        value: T,
    ) -> Filter<V> {
        Filter {
            field: self.name,
            condition: condition(value.key()),
            view: PhantomData,
        }
    }
}

/// Ranges and orders: for fields always set (`where T: Ordered`, so an
/// `Option` field is refused with a message saying why).
impl<V, T: IndexKey> Field<V, T> {
    /// Views whose field is below `value`.
    pub fn before(self, value: impl Into<T>) -> Filter<V>
    where
        T: Ordered,
    {
        self.range(Bound::Unbounded, Bound::Excluded(value.into()))
    }

    /// Views whose field is at most `value`.
    pub fn until(self, value: impl Into<T>) -> Filter<V>
    where
        T: Ordered,
    {
        self.range(Bound::Unbounded, Bound::Included(value.into()))
    }

    /// Views whose field is above `value`.
    pub fn after(self, value: impl Into<T>) -> Filter<V>
    where
        T: Ordered,
    {
        self.range(Bound::Excluded(value.into()), Bound::Unbounded)
    }

    /// Views whose field is at least `value`.
    pub fn since(self, value: impl Into<T>) -> Filter<V>
    where
        T: Ordered,
    {
        self.range(Bound::Included(value.into()), Bound::Unbounded)
    }

    /// Views whose field is at least `from` and below `to`.
    pub fn between(self, from: impl Into<T>, to: impl Into<T>) -> Filter<V>
    where
        T: Ordered,
    {
        self.range(Bound::Included(from.into()), Bound::Excluded(to.into()))
    }

    /// Orders the views by this field, lowest first.
    pub fn asc(self) -> Order<V>
    where
        T: Ordered,
    {
        Order::new(self.name, Direction::Ascending)
    }

    /// Orders the views by this field, highest first.
    pub fn desc(self) -> Order<V>
    where
        T: Ordered,
    {
        Order::new(self.name, Direction::Descending)
    }

    fn range(self, lower: Bound<T>, upper: Bound<T>) -> Filter<V> {
        let key = |bound: Bound<T>| -> Result<Bound<KeyValue>, KeyError> {
            Ok(match bound {
                Bound::Included(value) => Bound::Included(value.key()?),
                Bound::Excluded(value) => Bound::Excluded(value.key()?),
                Bound::Unbounded => Bound::Unbounded,
            })
        };
        let condition = key(lower).and_then(|lower| Ok(Condition::Range(lower, key(upper)?)));
        Filter {
            field: self.name,
            condition,
            view: PhantomData,
        }
    }
}

/// What one filter of a query asks of a field.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Condition {
    /// Equal to one of these.
    In(Vec<KeyValue>),
    /// Within these bounds.
    Range(Bound<KeyValue>, Bound<KeyValue>),
}

/// One filter of a query on view type `V`, made from a [`Field`].
pub struct Filter<V> {
    pub(crate) field: &'static str,
    pub(crate) condition: Result<Condition, KeyError>,
    view: PhantomData<fn() -> V>,
}

impl<V> fmt::Debug for Filter<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Filter")
            .field("field", &self.field)
            .field("condition", &self.condition)
            .finish()
    }
}

/// Which way a query orders its views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Lowest first.
    Ascending,
    /// Highest first.
    Descending,
}

/// The order of a query on view type `V`, made from a [`Field`].
pub struct Order<V> {
    pub(crate) field: &'static str,
    pub(crate) direction: Direction,
    view: PhantomData<fn() -> V>,
}

impl<V> Order<V> {
    fn new(field: &'static str, direction: Direction) -> Self {
        Self {
            field,
            direction,
            view: PhantomData,
        }
    }
}

impl<V> Clone for Order<V> {
    fn clone(&self) -> Self {
        Self::new(self.field, self.direction)
    }
}

impl<V> fmt::Debug for Order<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Order")
            .field("field", &self.field)
            .field("direction", &self.direction)
            .finish()
    }
}
