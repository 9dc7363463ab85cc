//! [`DecisionModel`]: a rule across streams, decided on the events a query
//! of event names and tags selects (a dynamic consistency boundary).

use crate::aggregate::{Decision, Event};
use crate::boundary::{EventQuery, InvalidTag, Tag};
use crate::envelope::Envelope;
use crate::error::PayloadError;

/// A decision over a consistency boundary: the state it folds from the
/// events it applies, wherever they were recorded, and a command it
/// decides on. Implemented by `#[derive(DecisionModel)]` with
/// `#[decision_impl]`.
///
/// Its `#[tag]` fields name the boundary: a decision applies each event
/// type its `#[apply]` methods take that carries one of those tags with
/// the same value. [`Cqrs::decide`](crate::Cqrs::decide) reads those
/// events, decides, and appends on the condition that none was recorded
/// since; a decision on another boundary never conflicts with it.
///
/// # Examples
///
/// ```
/// use cqrs_core::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// pub struct NameClaimed { pub name: String, pub account: String }
///
/// #[derive(Debug, Clone, Serialize, Deserialize, Event)]
/// pub enum NameEvent {
///     #[event(name = "doc.name_claimed", tags(name))]
///     Claimed(NameClaimed),
/// }
///
/// #[derive(Debug, Clone)]
/// pub struct ClaimName { pub account: String }
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("the name is taken")]
/// pub struct NameTaken;
///
/// #[derive(Debug, Clone, Default, DecisionModel)]
/// #[decision(name = "doc.name", command = ClaimName, event = NameEvent, error = NameTaken)]
/// pub struct UniqueName {
///     #[tag]
///     name: String,
///     taken: bool,
/// }
///
/// #[decision_impl]
/// impl UniqueName {
///     #[command_handler]
///     fn claim(&self, command: ClaimName) -> Result<NameClaimed, NameTaken> {
///         if self.taken {
///             return Err(NameTaken);
///         }
///         Ok(NameClaimed { name: self.name.clone(), account: command.account })
///     }
///
///     #[apply]
///     fn claimed(&mut self, _: &NameClaimed) {
///         self.taken = true;
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let app = Cqrs::builder(MemoryStore::new()).build().unwrap();
/// let name = |name: &str| UniqueName { name: name.into(), ..UniqueName::default() };
/// let claim = |account: &str| ClaimName { account: account.into() };
/// app.decide(name("ada"), claim("a-1")).await.unwrap();
/// assert!(matches!(
///     app.decide(name("ada"), claim("a-2")).await,
///     Err(CommandError::Domain(NameTaken))
/// ));
/// app.decide(name("grace"), claim("a-2")).await.unwrap();
/// # });
/// ```
pub trait DecisionModel: Clone + Send + Sync + Sized + 'static {
    /// The stored name of the streams its events go to, one per boundary
    /// (`#[decision(name = ..)]`).
    const NAME: &'static str;

    /// The names of its `#[tag]` fields.
    const TAG_KEYS: &'static [&'static str];

    /// The event types it applies, with the tags each carries.
    const APPLIES: &'static [Applied];

    /// The command it decides on.
    type Command: Clone + Send + 'static;

    /// The events it records.
    type Event: Event;

    /// Why it refuses a command.
    type Error: Send + 'static;

    /// The boundary: its `#[tag]` fields as tags, `field:value`.
    fn tags(&self) -> Result<Vec<Tag>, InvalidTag>;

    /// Applies an event its query matched; an event of a name it does not
    /// apply is left be.
    fn apply_recorded(&mut self, envelope: &Envelope) -> Result<(), PayloadError>;

    /// Decides on the command against the state applied so far.
    fn decide(&self, command: Self::Command) -> Result<Decision<Self::Event>, Self::Error>;

    /// The events it decides on: for each of its tags, the events of the
    /// types it applies that carry that tag. An event selected by one of
    /// its tags is applied whatever its other tags: a course's capacity
    /// counts every subscription to the course, a student's limit every
    /// subscription of the student, and a decision on both sees both.
    fn query(&self) -> Result<EventQuery, InvalidTag> {
        let mut query = EventQuery::new();
        for tag in self.tags()? {
            let names: Vec<&'static str> = Self::APPLIES
                .iter()
                .filter(|applied| applied.tag_keys.contains(&tag.key()))
                .map(|applied| applied.event_name)
                .collect();
            if !names.is_empty() {
                query = query.item(names, [tag]);
            }
        }
        Ok(query)
    }

    /// The id of the stream its events go to: its tags, `/` between them.
    fn stream_id(&self) -> Result<String, InvalidTag> {
        Ok(self
            .tags()?
            .iter()
            .map(Tag::as_str)
            .collect::<Vec<_>>()
            .join("/"))
    }
}

/// An event type a decision applies: its stored name and the fields it is
/// tagged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The stored name.
    pub event_name: &'static str,
    /// The names of the fields it is tagged by.
    pub tag_keys: &'static [&'static str],
}
