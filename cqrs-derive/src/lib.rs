//! Macros for `cqrs-core`; depend on `cqrs-core`, which re-exports them.
//!
//! Each macro parses its input into the model of `ast.rs`, validates it
//! (`check.rs`), and expands it (`expand/`). Mistakes are collected so one
//! compile shows all of them, and a failed derive still emits a placeholder
//! impl (`fallback.rs`) so a mistake is reported once, where it is.

#![warn(unreachable_pub)]

mod ast;
mod attr;
mod check;
mod errors;
mod expand;
mod fallback;

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
    if let Some(attr) = &aggregate.attr {
        let missing = [
            (
                "name",
                attr.name.is_none(),
                "\"..\", the aggregate type as the log keeps it forever",
            ),
            (
                "command",
                attr.command.is_none(),
                "MyCommand, the #[derive(Command)] enum it handles",
            ),
            (
                "event",
                attr.event.is_none(),
                "MyEvent, the #[derive(Event)] enum it records",
            ),
            (
                "error",
                attr.error.is_none(),
                "MyError, what its command handlers return on rejection",
            ),
        ];
        for (key, is_missing, what) in missing {
            if is_missing {
                errors.spanned(
                    attr.original,
                    format!("#[aggregate(..)] is missing `{key} = {what}`"),
                );
            }
        }
        if let (Some(version), None) = (&attr.snapshot_version, &attr.snapshot_every) {
            errors.spanned(
                version,
                "`snapshot_version` needs `snapshot_every = N`, how often to take a snapshot",
            );
        }
    } else if matches!(input.data, syn::Data::Struct(_)) {
        errors.spanned(
            &input.ident,
            "#[derive(Aggregate)] needs #[aggregate(name = \"..\", command = .., event = .., error = ..)]",
        );
    }
    let output = if errors.is_empty() {
        expand::aggregate::derive(&aggregate)
    } else {
        fallback::aggregate(&aggregate)
    };
    with_errors(errors, output)
}

/// Implements `Command` for an enum whose variants each wrap one command struct,
/// and routes each variant to its `#[command_handler]`.
#[proc_macro_derive(Command)]
pub fn derive_command(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    let mut errors = Errors::default();
    let mut command = ast::Enum::from_syn(&input, "command", &mut errors);
    check::variants(&mut command, "command", &mut errors);
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
    let mut event = ast::Enum::from_syn(&input, "event", &mut errors);
    check::variants(&mut event, "event", &mut errors);
    let output = match input.data {
        _ if !input.generics.params.is_empty() => proc_macro2::TokenStream::new(),
        syn::Data::Enum(_) => expand::event::derive(&event),
        _ => fallback::event(&input.ident),
    };
    with_errors(errors, output)
}

/// Marks the inherent impl block of an aggregate that holds its
/// `#[command_handler]` and `#[apply]` methods.
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

/// Marks a method of an `#[aggregate_impl]` block that applies one event:
/// `fn name(&mut self, event: &E)`.
#[proc_macro_attribute]
pub fn apply(_args: TokenStream, input: TokenStream) -> TokenStream {
    outside_aggregate_impl("apply", input)
}

/// Registers a free function that receives each committed event of one type:
/// `fn name(event: &E)` or `fn name(event: &E, envelope: &Envelope<Enum>)`,
/// optionally `async`, returning nothing or `Result<(), impl Display>`.
#[proc_macro_attribute]
pub fn event_handler(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    attr::no_macro_args(args.into(), "event_handler", &mut errors);
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
    let output = match ast::EventHandler::from_syn(item.clone(), &mut errors) {
        Some(handler) if errors.is_empty() => expand::event_handler::expand(&handler),
        _ => quote!(#item),
    };
    with_errors(errors, output)
}

/// Makes the document type of the impl block a projection, a read model kept
/// from the log: `#[projection(name = "..")]`, with one `#[event_handler]`
/// per event it reads, `async fn on(event: &E, envelope: &Envelope, views:
/// &mut Views<'_, Self>) -> Result<(), ViewError>` (the envelope optional).
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
    let name = attr::processor_name(args.into(), kind.attribute(), &mut errors);
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
    let mut processor = ast::ProcessorImpl::from_syn(item, kind, &mut errors);
    check::processor_handlers(&mut processor, &mut errors);
    let output = match name {
        Some(name) if errors.is_empty() => expand::processor::expand(&processor, &name),
        _ => expand::processor::fallback(&processor),
    };
    with_errors(errors, output)
}

/// `#[command_handler]` and `#[apply]` are read and removed by
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
