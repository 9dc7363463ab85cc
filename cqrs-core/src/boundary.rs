//! Consistency boundaries that span streams: [`Tag`]s on events, an
//! [`EventQuery`] over event names and tags, and the [`AppendCondition`]
//! that makes an append fail when the query's answer changed since it was
//! read (the dynamic consistency boundary of <https://dcb.events>).
//!
//! An aggregate guards a rule inside one stream: its append expects the
//! stream's version. A rule across streams (a username unique among all
//! accounts, a course of at most 30 students each in at most 10 courses)
//! reads the events a query matches wherever they are, decides, and appends
//! on the condition that nothing the query matches was appended after the
//! position it read. Two decisions whose queries share no event never
//! conflict; two that do are decided one after the other.
//!
//! # Examples
//!
//! ```
//! use cqrs_core::boundary::{EventQuery, Tag};
//!
//! let course = Tag::new("course", "c-101").unwrap();
//! let student = Tag::new("student", "s-7").unwrap();
//! // Events about the course, or the student's subscriptions anywhere.
//! let query = EventQuery::new()
//!     .item(["course.opened", "student.subscribed"], [course.clone()])
//!     .item(["student.subscribed"], [student.clone()]);
//! assert!(query.matches("student.subscribed", &[student.clone()]));
//! assert!(query.matches("course.opened", &[course.clone()]));
//! assert!(!query.matches("course.opened", &[student]));
//! ```

use std::fmt;

/// A label an event carries beside its stream, `key:value`, that a query
/// selects it by. Events get their tags from their `#[tag]` fields.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(String);

/// Why a text is not a [`Tag`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tag `{text}`: {reason}")]
pub struct InvalidTag {
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Tag {
    /// The tag `key:value`. The key is not empty and holds no `:`; neither
    /// holds a NUL character, which no store keeps.
    pub fn new(key: &str, value: impl fmt::Display) -> Result<Self, InvalidTag> {
        Self::parse(format!("{key}:{value}"))
    }

    /// A tag from its text, `key:value`.
    pub fn parse(text: impl Into<String>) -> Result<Self, InvalidTag> {
        let text = text.into();
        let invalid = |text, reason| Err(InvalidTag { text, reason });
        match text.find(':') {
            None => invalid(text, "it has no `:` between its key and value"),
            Some(0) => invalid(text, "its key is empty"),
            Some(_) if text.contains('\0') => invalid(text, "it holds a NUL character"),
            Some(_) => Ok(Self(text)),
        }
    }

    /// The key, before the first `:`.
    pub fn key(&self) -> &str {
        self.0.split_once(':').map_or("", |(key, _)| key)
    }

    /// The value, after the first `:`.
    pub fn value(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, value)| value)
    }

    /// The text, `key:value`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which events a decision reads: the events any of its items matches.
///
/// An item matches an event whose name is one of the item's names (any
/// name, when it names none) and that carries every one of the item's
/// tags (any tags, when it has none). An item of names alone reads every
/// event of those names, in every stream; a query of no item matches
/// nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    items: Vec<QueryItem>,
}

/// One item of an [`EventQuery`]: event names, and tags an event carries
/// all of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryItem {
    /// Stored event names; empty for every name.
    pub event_names: Vec<String>,
    /// Tags an event must all carry; empty for no tag.
    pub tags: Vec<Tag>,
}

impl QueryItem {
    /// Whether an event of this name and these tags is one the item selects.
    pub fn matches(&self, event_name: &str, tags: &[Tag]) -> bool {
        (self.event_names.is_empty() || self.event_names.iter().any(|name| name == event_name))
            && self.tags.iter().all(|tag| tags.contains(tag))
    }
}

impl EventQuery {
    /// A query of no item, which matches nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an item: events of one of `event_names` (any, when none) that
    /// carry all of `tags`.
    pub fn item<N, T>(
        mut self,
        event_names: impl IntoIterator<Item = N>,
        tags: impl IntoIterator<Item = T>,
    ) -> Self
    where
        N: Into<String>,
        T: Into<Tag>,
    {
        self.items.push(QueryItem {
            event_names: event_names.into_iter().map(Into::into).collect(),
            tags: tags.into_iter().map(Into::into).collect(),
        });
        self
    }

    /// The items, any of which selects an event.
    pub fn items(&self) -> &[QueryItem] {
        &self.items
    }

    /// Whether the query selects an event of this name and these tags.
    pub fn matches(&self, event_name: &str, tags: &[Tag]) -> bool {
        self.items.iter().any(|item| item.matches(event_name, tags))
    }

    /// Whether the query can match no event at all.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// What a conditional append requires: that no event `query` matches was
/// appended after position `after` (the head of the log the decision read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendCondition {
    /// The events the decision was made on.
    pub query: EventQuery,
    /// The log's head when they were read.
    pub after: u64,
}
