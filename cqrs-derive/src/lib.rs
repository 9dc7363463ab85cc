//! Macros for `cqrs-core`; depend on `cqrs-core`, which re-exports them.
//!
//! Each macro parses its input into the model of `ast.rs` (attributes in
//! `attr.rs`), validates each item (`valid.rs`) and the items against each
//! other (`check.rs`), and expands it (`expand/`). Mistakes are collected so one
//! compile shows all of them, and a failed derive still emits a placeholder
//! impl (`fallback.rs`) so a mistake is reported once, where it is.

#![warn(unreachable_pub)]

mod ast;
mod attr;
mod check;
mod errors;
mod expand;
mod fallback;
mod valid;

use proc_macro::TokenStream;
use quote::quote;
use syn::{DeriveInput, ItemFn, ItemImpl, parse_macro_input};

use crate::errors::Errors;

/// Implements `Aggregate` for the struct that holds an aggregate's state.
///
/// `#[aggregate(name = "..", command = C, event = E, error = Err)]`, plus
/// optionally `services = S`, and `snapshot_every = N` (with
/// `snapshot_version = V` to invalidate older snapshots) for a state that
/// implements `Serialize` and `Deserialize`. Command handlers and `#[apply]` methods go in an
/// `#[aggregate_impl]` block.
#[proc_macro_derive(Aggregate, attributes(aggregate))]
pub fn derive_aggregate(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    let mut errors = Errors::default();
    let aggregate = ast::Aggregate::from_syn(&input, &mut errors);
    let output = match valid::aggregate(&aggregate, &mut errors) {
        Ok(checked) => expand::aggregate::derive(&checked),
        Err(unusable) => fallback::aggregate(&aggregate, unusable),
    };
    with_errors(errors, output)
}

/// Declares the module of a unit struct, with its submodules, a domain: a
/// bounded context whose aggregates, projections, process managers and
/// event handlers an app hosts together (`CqrsBuilder::host::<D>()`).
#[proc_macro_derive(Domain)]
pub fn derive_domain(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    let mut errors = Errors::default();
    let output = if valid::domain(&input, &mut errors) {
        expand::domain::derive(&input.ident)
    } else {
        proc_macro2::TokenStream::new()
    };
    with_errors(errors, output)
}

/// Implements `Deadline` for a value an aggregate schedules: stored under
/// the type's name at version 1, or `#[deadline_type(name = "..", version =
/// N)]`. The type also derives serde's `Serialize` and `Deserialize`.
#[proc_macro_derive(Deadline, attributes(deadline_type))]
pub fn derive_deadline(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    let mut errors = Errors::default();
    let deadline = ast::DeadlineType::from_syn(&input, &mut errors);
    let output = if valid::deadline_type(&deadline, &mut errors) {
        expand::deadline::derive(&deadline)
    } else {
        proc_macro2::TokenStream::new()
    };
    with_errors(errors, output)
}

/// Implements `Indexed` for a projection's view type: `#[indexes((a, b),
/// c)]` (each index its fields in order, or one field) declares what
/// queries filter by (equality on a prefix of an index) and order or range
/// by (the field after it). Makes `<Type>Fields`, the typed handle of each declared field
/// (`OrderSummary::FIELDS.customer`), so a query on a field that is not
/// declared does not compile.
#[proc_macro_derive(Indexed, attributes(indexes))]
pub fn derive_indexed(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    let mut errors = Errors::default();
    let indexed = ast::IndexedType::from_syn(&input, &mut errors);
    let output = if valid::indexed_type(&indexed, &mut errors) {
        expand::indexed::derive(&indexed)
    } else {
        proc_macro2::TokenStream::new()
    };
    with_errors(errors, output)
}

/// Implements `Command` for an enum whose variants each wrap one command struct,
/// and routes each variant to its `#[command_handler]`. Each command struct
/// must implement `Serialize`: a command sent with a command id keeps a
/// digest of its JSON, to tell a retry from another command.
#[proc_macro_derive(Command)]
pub fn derive_command(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    let mut errors = Errors::default();
    let mut command = ast::Enum::from_syn(&input, ast::EnumKind::Command, &mut errors);
    valid::enumeration(&command, &mut errors);
    check::variants(&mut command, &mut errors);
    let output = match input.data {
        _ if !input.generics.params.is_empty() => proc_macro2::TokenStream::new(),
        syn::Data::Enum(_) => expand::command::derive(&command),
        _ => fallback::command(&input.ident),
    };
    with_errors(errors, output)
}

/// Implements `Event` for an enum whose variants each wrap one event struct,
/// and routes each variant to its `#[apply]`.
///
/// `#[event(name = "..", version = N)]` on a variant sets the stored name
/// (default: the struct's name) and schema version (default 1).
/// `upcast(1 = OldType, ..)` reads older stored versions as `OldType` and
/// converts them with `From<OldType>` into the current type.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    let mut errors = Errors::default();
    let mut event = ast::Enum::from_syn(&input, ast::EnumKind::Event, &mut errors);
    valid::enumeration(&event, &mut errors);
    check::variants(&mut event, &mut errors);
    let output = match input.data {
        _ if !input.generics.params.is_empty() => proc_macro2::TokenStream::new(),
        syn::Data::Enum(_) => expand::event::derive(&event),
        _ => fallback::event(&input.ident),
    };
    with_errors(errors, output)
}

/// Implements `DecisionModel` for a struct: a decision over the events
/// that carry its tags, wherever they were recorded.
///
/// `#[decision(name = "..", command = C, event = E, error = Err)]` names
/// the streams of its events, the command it decides on, the event enum it
/// records and its error; `#[tag]` marks the fields that name the boundary
/// (the others hold the state it folds). Its `#[command_handler]` and
/// `#[apply]` methods go in a `#[decision_impl]` block. Each event type it
/// applies must carry one of its tags, and each event it records must have
/// an `#[apply]`: both are checked at compile time.
#[proc_macro_derive(DecisionModel, attributes(decision, tag))]
pub fn derive_decision_model(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    let mut errors = Errors::default();
    let decision = ast::DecisionStruct::from_syn(&input, &mut errors);
    valid::decision(&decision, &mut errors);
    let output = if input.generics.params.is_empty() {
        expand::decision::derive(&decision)
    } else {
        proc_macro2::TokenStream::new()
    };
    with_errors(errors, output)
}

/// Marks the inherent impl block of a `#[derive(DecisionModel)]` struct
/// that holds its one `#[command_handler]`, `fn name(&self, command: C) ->
/// Result<Events, Error>`, and its `#[apply]` methods, `fn name(&mut self,
/// event: &E)`, one per event type it decides on.
#[proc_macro_attribute]
pub fn decision_impl(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    attr::no_macro_args(args.into(), "decision_impl", &mut errors);
    let item = match syn::parse::<ItemImpl>(input.clone()) {
        Ok(item) => item,
        Err(_) => {
            let input = proc_macro2::TokenStream::from(input);
            errors.push(syn::Error::new(
                proc_macro2::Span::call_site(),
                "#[decision_impl] goes on the inherent impl block of a decision, `impl MyDecision { .. }`",
            ));
            return with_errors(errors, input);
        }
    };
    let mut decision_impl = ast::AggregateImpl::from_syn(item, &mut errors);
    valid::aggregate_impl(&mut decision_impl, &mut errors);
    check::handlers(&mut decision_impl, &mut errors);
    valid::decision_impl(&mut decision_impl, &mut errors);
    with_errors(errors, expand::decision_impl::expand(&decision_impl))
}

/// Marks the inherent impl block of an aggregate that holds its
/// `#[command_handler]`, `#[deadline]` and `#[apply]` methods.
#[proc_macro_attribute]
pub fn aggregate_impl(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    attr::no_macro_args(args.into(), "aggregate_impl", &mut errors);
    let item = match syn::parse::<ItemImpl>(input.clone()) {
        Ok(item) => item,
        Err(_) => {
            let input = proc_macro2::TokenStream::from(input);
            errors.push(syn::Error::new(
                proc_macro2::Span::call_site(),
                "#[aggregate_impl] goes on the inherent impl block of an aggregate, `impl MyAggregate { .. }`",
            ));
            return with_errors(errors, input);
        }
    };
    let mut aggregate_impl = ast::AggregateImpl::from_syn(item, &mut errors);
    valid::aggregate_impl(&mut aggregate_impl, &mut errors);
    check::handlers(&mut aggregate_impl, &mut errors);
    with_errors(errors, expand::aggregate_impl::expand(&aggregate_impl))
}

/// Marks a method of an `#[aggregate_impl]` block that decides on one command:
/// `fn name(&self, command: C) -> Result<Events, Error>`, optionally `async`,
/// optionally also taking `&CommandContext` and the aggregate's `&Services`.
/// `#[command_handler(create)]` runs only on an aggregate with no events.
#[proc_macro_attribute]
pub fn command_handler(_args: TokenStream, input: TokenStream) -> TokenStream {
    outside_aggregate_impl("command_handler", input)
}

/// Marks a method of an `#[aggregate_impl]` block that decides on one type
/// of deadline the aggregate scheduled, once it is due, as a command
/// handler decides on a command: `fn name(&self, deadline: D) -> Result<Events,
/// Error>`, optionally `async`, optionally also taking `&DeadlineContext` and
/// the aggregate's `&Services`. In a `#[process_manager]` block it reacts to
/// one of the manager's deadlines: `async fn name(&self, deadline: D,
/// context: &ProcessContext<'_>) -> Result<(), E>` (the context and a
/// `&DeadlineContext` are optional; it may return deadlines as an
/// `#[event_handler]` does). The owner must return `Schedule<D>` from some
/// handler, and every `Schedule<D>` needs this handler: both are checked at
/// compile time.
#[proc_macro_attribute]
pub fn deadline(_args: TokenStream, input: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    errors.push(syn::Error::new(
        proc_macro2::Span::call_site(),
        "#[deadline] only works inside an #[aggregate_impl] or #[process_manager] block: add one of them to the impl block",
    ));
    with_errors(errors, input.into())
}

/// Marks a method of an `#[aggregate_impl]` block that applies one event:
/// `fn name(&mut self, event: &E)`.
#[proc_macro_attribute]
pub fn apply(_args: TokenStream, input: TokenStream) -> TokenStream {
    outside_aggregate_impl("apply", input)
}

/// Registers a free function that receives each committed event of one type:
/// `fn name(event: &E)` or `fn name(event: &E, envelope: &Envelope<Enum>)`,
/// optionally `async`, returning nothing or `Result<(), E>` where `E` is an
/// error (or a `String`).
///
/// It follows the log from a checkpoint of its own, like a projection, so
/// it sees each event at least once, even one committed just before a
/// crash. `#[event_handler(inline)]` runs it right after the commit instead,
/// in the committing process: at most once, and not at all if the process
/// dies first.
#[proc_macro_attribute]
pub fn event_handler(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let attr = attr::event_handler(args.into(), &mut errors);
    let item = match syn::parse::<ItemFn>(input.clone()) {
        Ok(item) => item,
        Err(_) => {
            errors.push(syn::Error::new(
                proc_macro2::Span::call_site(),
                "#[event_handler] goes on a free function, `fn on_event(event: &MyEvent)`",
            ));
            return with_errors(errors, input.into());
        }
    };
    let handler = ast::EventHandler::from_syn(item, attr);
    let output = if valid::event_handler(&handler, &mut errors) && errors.is_empty() {
        expand::event_handler::expand(&handler)
    } else {
        let original = &handler.original;
        quote!(#original)
    };
    with_errors(errors, output)
}

/// Makes the type of the impl block a projection: its values are views,
/// one per id, kept from the log: `#[projection(name = "..")]`, with one `#[event_handler]`
/// per event it reads, `async fn on(event: &E, envelope: &Envelope, views:
/// &mut Views<'_, Self>) -> Result<(), ViewError>` (the envelope optional).
///
/// With `tables(a, b)` and `migrations(sqlite("a.sql"), postgres("b.sql"))`
/// (files from the crate's root, one or more steps per database), it is a
/// table projection: its handlers take `tables: &mut Tables<'_>` instead
/// and write the version's SQL tables `a_vN`, `b_vN`.
#[proc_macro_attribute]
pub fn projection(args: TokenStream, input: TokenStream) -> TokenStream {
    processor(args, input, ast::ProcessorKind::Projection)
}

/// Makes the type of the impl block a process manager, which reacts to events
/// by sending commands: `#[process_manager(name = "..")]`, with one
/// `#[event_handler]` per event, `async fn on(&self, event: &E, envelope:
/// &Envelope, context: &ProcessContext<'_>) -> Result<(), E>` (the envelope
/// optional). The type implements `Default` to be registered.
#[proc_macro_attribute]
pub fn process_manager(args: TokenStream, input: TokenStream) -> TokenStream {
    processor(args, input, ast::ProcessorKind::ProcessManager)
}

fn processor(args: TokenStream, input: TokenStream, kind: ast::ProcessorKind) -> TokenStream {
    let mut errors = Errors::default();
    let versioned = kind == ast::ProcessorKind::Projection;
    let args = attr::processor_args(args.into(), kind.attribute(), versioned, &mut errors);
    valid::processor_args(&args, &mut errors);
    let kind = if args.tables.is_some() || args.migrations.is_some() {
        ast::ProcessorKind::TableProjection
    } else {
        kind
    };
    let item = match syn::parse::<ItemImpl>(input.clone()) {
        Ok(item) => item,
        Err(_) => {
            errors.push(syn::Error::new(
                proc_macro2::Span::call_site(),
                format!(
                    "#[{}] goes on an impl block with #[event_handler] methods",
                    kind.attribute()
                ),
            ));
            return with_errors(errors, input.into());
        }
    };
    let mut processor = ast::ProcessorImpl::from_syn(item, kind);
    valid::processor_impl(&mut processor, &mut errors);
    check::processor_handlers(&mut processor, &mut errors);
    let output = match &args.name {
        Some(_) if errors.is_empty() => expand::processor::expand(&processor, &args),
        _ => fallback::processor(&processor),
    };
    with_errors(errors, output)
}

/// `#[command_handler]`, `#[deadline]` and `#[apply]` are read and removed by
/// `#[aggregate_impl]`; reaching their own expansion means that is missing.
fn outside_aggregate_impl(name: &str, input: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    errors.push(syn::Error::new(
        proc_macro2::Span::call_site(),
        format!("#[{name}] only works inside an #[aggregate_impl] block: add #[aggregate_impl] to the impl block"),
    ));
    with_errors(errors, input.into())
}

fn with_errors(errors: Errors, output: proc_macro2::TokenStream) -> TokenStream {
    let errors = errors.into_compile_errors();
    quote!(#errors #output).into()
}
