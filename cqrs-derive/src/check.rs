//! Rules that compare several items: one variant per wrapped type, one stored
//! name per event, one handler per command and event. Each duplicate is
//! reported and dropped, so expansion does not add conflicting impls on top.

use std::collections::HashMap;

use quote::ToTokens;

use crate::ast::{AggregateImpl, Enum, EnumKind, Handler, ProcessorImpl, type_name};
use crate::errors::Errors;

pub(crate) fn variants(input: &mut Enum, errors: &mut Errors) {
    let kind = input.kind;
    let mut by_type: HashMap<String, String> = HashMap::new();
    let mut by_stored: HashMap<(String, u32), String> = HashMap::new();
    let count = input.variants.len();
    input.variants.retain(|variant| {
        let ty = variant.ty.to_token_stream().to_string();
        if let Some(first) = by_type.get(&ty) {
            errors.spanned(
                variant.ty,
                format!(
                    "`{}` is wrapped by both `{first}` and `{}`; each {} type belongs to one variant",
                    type_name(variant.ty),
                    variant.ident,
                    kind.noun(),
                ),
            );
            return false;
        }
        by_type.insert(ty, variant.ident.to_string());
        if kind == EnumKind::Event {
            let mut seen = Vec::new();
            for upcast in &variant.event.upcasts {
                if upcast.version >= variant.version() {
                    errors.push(syn::Error::new(
                        upcast.version_span,
                        format!(
                            "`upcast` reads older versions; {} is not older than `{}`'s version {}",
                            upcast.version,
                            variant.ident,
                            variant.version()
                        ),
                    ));
                } else if seen.contains(&upcast.version) {
                    errors.push(syn::Error::new(
                        upcast.version_span,
                        format!("version {} is upcast twice", upcast.version),
                    ));
                }
                seen.push(upcast.version);
            }
            let stored = (variant.stored_name(), variant.version());
            if let Some(first) = by_stored.get(&stored) {
                let span = match &variant.event.name {
                    Some(name) => name.to_token_stream(),
                    None => variant.original.to_token_stream(),
                };
                // Reported but kept: the variant's type is still an event.
                errors.spanned(
                    span,
                    format!(
                        "`{first}` and `{}` are both stored as `{}` version {}; the log could not tell them \
                         apart: give one another #[event(name = ..)] or version",
                        variant.ident, stored.0, stored.1,
                    ),
                );
            } else {
                by_stored.insert(stored, variant.ident.to_string());
            }
        }
        true
    });
    if input.variants.len() < count {
        input.complete = false;
    }
}

pub(crate) fn handlers(input: &mut AggregateImpl, errors: &mut Errors) {
    one_handler_per_input(&mut input.command_handlers, errors);
    one_handler_per_input(&mut input.deadline_handlers, errors);
    let mut events: HashMap<String, String> = HashMap::new();
    input.appliers.retain(|applier| {
        let Some(event) = applier.event() else {
            return true;
        };
        let ty = event.to_token_stream().to_string();
        match events.get(&ty) {
            Some(first) => {
                errors.spanned(
                    event,
                    format!(
                        "`{}` already has an #[apply] method, `{first}`; one event type is applied once",
                        type_name(event),
                    ),
                );
                false
            }
            None => {
                events.insert(ty, applier.ident().to_string());
                true
            }
        }
    });
}

/// One command (or deadline) type has one handler.
fn one_handler_per_input(handlers: &mut Vec<Handler>, errors: &mut Errors) {
    let mut seen: HashMap<String, String> = HashMap::new();
    handlers.retain(|handler| {
        let Some(input) = handler.input() else {
            return true;
        };
        let ty = input.to_token_stream().to_string();
        match seen.get(&ty) {
            Some(first) => {
                errors.spanned(
                    input,
                    format!(
                        "`{}` already has a #[{}], `{first}`; one {} type has one handler",
                        type_name(input),
                        handler.kind.attribute(),
                        handler.kind.input(),
                    ),
                );
                false
            }
            None => {
                seen.insert(ty, handler.ident().to_string());
                true
            }
        }
    });
}

pub(crate) fn processor_handlers(input: &mut ProcessorImpl, errors: &mut Errors) {
    let mut events: HashMap<String, String> = HashMap::new();
    input.handlers.retain(|handler| {
        let Some(event) = handler.event() else {
            return true;
        };
        let ty = event.to_token_stream().to_string();
        match events.get(&ty) {
            Some(first) => {
                errors.spanned(
                    event,
                    format!(
                        "`{}` already has an #[event_handler] here, `{first}`; one event type is handled once",
                        type_name(event),
                    ),
                );
                false
            }
            None => {
                events.insert(ty, handler.ident().to_string());
                true
            }
        }
    });
    let mut deadlines: HashMap<String, String> = HashMap::new();
    input.deadline_handlers.retain(|handler| {
        let Some(deadline) = handler.deadline() else {
            return true;
        };
        let ty = deadline.to_token_stream().to_string();
        match deadlines.get(&ty) {
            Some(first) => {
                errors.spanned(
                    deadline,
                    format!(
                        "`{}` already has a #[deadline], `{first}`; one deadline type has one handler",
                        type_name(deadline),
                    ),
                );
                false
            }
            None => {
                deadlines.insert(ty, handler.ident().to_string());
                true
            }
        }
    });
}
