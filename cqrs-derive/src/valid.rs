//! What is wrong with one item on its own: a receiver, a parameter, a return
//! type, a missing key. Each mistake is reported where it was written, with
//! how to fix it; the item is marked so expansion emits a placeholder and
//! the mistake is not reported again as something missing.

use quote::ToTokens;
use syn::{DeriveInput, Generics};

use crate::ast::{
    Aggregate, AggregateImpl, Applier, DeadlineType, DecisionStruct, Enum, EventHandler, Handler,
    HandlerKind, IndexedType, ParamKind, ProcessDeadline, ProcessDeadlineParamKind,
    ProcessorHandler, ProcessorImpl, ProcessorKind, ProcessorParamKind, Receiver,
};
use crate::attr::{AggregateAttr, ProcessorArgs};
use crate::errors::Errors;

pub(crate) fn aggregate<'a>(
    input: &'a Aggregate<'a>,
    errors: &mut Errors,
) -> Result<CheckedAggregate<'a>, Unusable> {
    no_generics(input.original, "aggregate", errors);
    let Some(attr) = &input.attr else {
        if matches!(input.original.data, syn::Data::Struct(_)) {
            errors.spanned(
                &input.original.ident,
                "#[derive(Aggregate)] needs #[aggregate(name = \"..\", command = .., event = .., error = ..)]",
            );
        }
        return Err(Unusable::default());
    };
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
    let unusable = one_enum_for_both(attr, errors);
    let (Some(name), Some(command), Some(event), Some(error)) =
        (&attr.name, &attr.command, &attr.event, &attr.error)
    else {
        return Err(unusable);
    };
    if !errors.is_empty() {
        return Err(unusable);
    }
    Ok(CheckedAggregate {
        ident: &input.original.ident,
        attr,
        name,
        command,
        event,
        error,
    })
}

/// Which keys of `#[aggregate(..)]` name a type the fallback impl cannot
/// stand on without every command handler failing on top.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Unusable {
    pub(crate) command: bool,
    pub(crate) event: bool,
}

/// One enum named as both `command` and `event` is one of the two: an
/// enum named `..Command` is taken for the command enum, so `event` is the
/// key to fix; any other, for the event enum.
fn one_enum_for_both(attr: &AggregateAttr, errors: &mut Errors) -> Unusable {
    let (Some(command), Some(event)) = (&attr.command, &attr.event) else {
        return Unusable::default();
    };
    if !same_type(command, event) {
        return Unusable::default();
    }
    let named = event.to_token_stream().to_string().replace(' ', "");
    if named.ends_with("Command") {
        errors.spanned(
            event,
            format!(
                "`event = {named}` names the command enum: `event` takes the #[derive(Event)] enum the aggregate records"
            ),
        );
        Unusable {
            command: false,
            event: true,
        }
    } else {
        errors.spanned(
            command,
            format!(
                "`command = {named}` names the event enum: `command` takes the #[derive(Command)] enum the aggregate handles"
            ),
        );
        Unusable {
            command: true,
            event: false,
        }
    }
}

/// An aggregate whose attribute names everything it needs, each key
/// checked: all that the expansion takes.
pub(crate) struct CheckedAggregate<'a> {
    pub(crate) ident: &'a syn::Ident,
    pub(crate) attr: &'a AggregateAttr<'a>,
    pub(crate) name: &'a syn::LitStr,
    pub(crate) command: &'a syn::Type,
    pub(crate) event: &'a syn::Type,
    pub(crate) error: &'a syn::Type,
}

/// Whether two types are written the same way (`DoorCommand` and
/// `crate::DoorCommand` are not: the compiler reports that case).
pub(crate) fn same_type(a: &syn::Type, b: &syn::Type) -> bool {
    a.to_token_stream().to_string() == b.to_token_stream().to_string()
}

/// `#[derive(Domain)]` goes on a unit struct without generics. Returns
/// whether the marker can be implemented: a generic one cannot be named in
/// `host::<..>()` without its parameters, so it gets no impl.
pub(crate) fn domain(input: &DeriveInput, errors: &mut Errors) -> bool {
    let unit =
        matches!(&input.data, syn::Data::Struct(data) if matches!(data.fields, syn::Fields::Unit));
    let generic = !input.generics.params.is_empty();
    if !unit || generic {
        errors.spanned(
            &input.ident,
            "#[derive(Domain)] goes on a unit struct without generics, such as `pub struct Billing;`",
        );
    }
    !generic
}

/// `#[derive(Deadline)]` goes on a type without generics: its stored name
/// is fixed.
pub(crate) fn deadline_type(input: &DeadlineType, errors: &mut Errors) -> bool {
    let count = errors.len();
    no_generics(input.original, "deadline", errors);
    errors.len() == count
}

/// `#[derive(Indexed)]` goes on a struct with named fields, with
/// `#[indexes(..)]` naming its fields, none twice in one index, no two
/// indexes alike.
pub(crate) fn indexed_type(input: &IndexedType, errors: &mut Errors) -> bool {
    let count = errors.len();
    let ident = &input.original.ident;
    if !matches!(&input.original.data, syn::Data::Struct(data) if matches!(data.fields, syn::Fields::Named(_)))
    {
        errors.spanned(
            ident,
            "#[derive(Indexed)] goes on a view type: a struct with named fields",
        );
        return false;
    }
    no_generics(input.original, "view", errors);
    if input.indexes.is_empty() {
        errors.spanned(
            ident,
            format!("#[derive(Indexed)] needs an index: add `#[indexes((field, ..))]` to `{ident}`, naming the fields queries filter and order by"),
        );
    }
    let fields: Vec<&syn::Ident> = input
        .fields()
        .into_iter()
        .filter_map(|field| field.ident.as_ref())
        .collect();
    for (at, index) in input.indexes.iter().enumerate() {
        for (position, field) in index.iter().enumerate() {
            if !fields.contains(&field) {
                errors.spanned(field, format!("`{ident}` has no field `{field}`"));
            } else if index[..position].contains(field) {
                errors.spanned(field, format!("`{field}` is in this index twice"));
            }
        }
        if input.indexes[..at].contains(index) {
            errors.spanned(&index[0], "this index is declared twice");
        }
    }
    errors.len() == count
}

pub(crate) fn enumeration(input: &Enum, errors: &mut Errors) {
    let syn::Data::Enum(data) = &input.original.data else {
        return;
    };
    no_generics(input.original, input.kind.noun(), errors);
    if data.variants.is_empty() {
        errors.spanned(
            &input.original.ident,
            format!(
                "`{}` has no variants; add one per {} type, e.g. `Variant({}Type)`",
                input.original.ident,
                input.kind.noun(),
                input.kind.derive(),
            ),
        );
    }
}

pub(crate) fn aggregate_impl(input: &mut AggregateImpl, errors: &mut Errors) {
    if let Some((path, _)) = &input.original.trait_ {
        input.lost_command = true;
        input.lost_deadline = true;
        input.lost_event = true;
        errors.spanned(
            path,
            format!(
                "#[aggregate_impl] goes on an inherent impl of the aggregate, `impl {} {{ .. }}`, not on an impl of `{}`",
                input.original.self_ty.to_token_stream(),
                path.to_token_stream(),
            ),
        );
    }
    if !input.original.generics.params.is_empty() {
        errors.spanned(
            &input.original.generics,
            "#[aggregate_impl] blocks cannot be generic",
        );
    }
    for (method, first, second) in &input.marked_twice {
        // The method is dropped: what it would have handled gets a
        // placeholder, so it is not reported again as unhandled.
        for mark in [first, second] {
            match *mark {
                "command_handler" => input.lost_command = true,
                "deadline" => input.lost_deadline = true,
                _ => input.lost_event = true,
            }
        }
        let what = if *second == "apply" {
            "a method either decides or applies"
        } else {
            "a method decides on one kind of input"
        };
        errors.spanned(
            method,
            format!("`{method}` is marked both #[{first}] and #[{second}]; {what}"),
        );
    }
    for handler in input
        .command_handlers
        .iter_mut()
        .chain(&mut input.deadline_handlers)
    {
        self::handler(handler, errors);
    }
    // A handler whose input cannot be told leaves every command (or
    // deadline) possibly handled; it is dropped and the rest get placeholders.
    let count = input.command_handlers.len();
    input
        .command_handlers
        .retain(|handler| handler.input().is_some());
    input.lost_command |= input.command_handlers.len() < count;
    let count = input.deadline_handlers.len();
    input
        .deadline_handlers
        .retain(|handler| handler.input().is_some());
    input.lost_deadline |= input.deadline_handlers.len() < count;
    for applier in &mut input.appliers {
        applier_method(applier, errors);
    }
    let count = input.appliers.len();
    input.appliers.retain(|applier| applier.event().is_some());
    input.lost_event |= input.appliers.len() < count;
    if input.lost_command || input.lost_deadline || input.lost_event {
        // The trait part is already reported; what is left is the methods.
        input.original.trait_ = None;
    }
}

fn handler(handler: &mut Handler, errors: &mut Errors) {
    let count = errors.len();
    let sig = &handler.original.sig;
    let name = &sig.ident;
    let receiver = &handler.self_param;
    let kind = handler.kind;
    let what = kind.handler();
    match handler.receiver {
        Receiver::MutRef => errors.spanned(
            receiver,
            format!(
                "{what} `{name}` takes `&mut self`, but {what}s only decide: \
                 take `&self` and change the state in the #[apply] method of the event it returns"
            ),
        ),
        Receiver::Value => errors.spanned(receiver, format!("{what} `{name}` must take `&self`")),
        Receiver::Ref => {}
        Receiver::Missing => {
            errors.spanned(name, format!("{what} `{name}` must take `&self` first"))
        }
    }
    if !sig.generics.params.is_empty() {
        errors.spanned(&sig.generics, format!("{what} `{name}` cannot be generic"));
    }
    let input = kind.input();
    let expected = format!(
        "{what}s take `&self`, the {input} by value, and optionally \
         `&{}` and the aggregate's services as `&Services`",
        kind.context()
    );
    let mut seen = Vec::new();
    for param in &handler.params {
        if param.kind == ParamKind::Unexpected || seen.contains(&param.kind) {
            errors.spanned(
                &param.original,
                format!(
                    "unexpected parameter `{}` of {what} `{name}`: {expected}",
                    param.original.pat.to_token_stream()
                ),
            );
        }
        seen.push(param.kind);
    }
    if handler.input().is_none() {
        let example = match kind {
            HandlerKind::Command => "command: MyCommand",
            HandlerKind::Deadline => "deadline: MyDeadline",
        };
        errors.push(syn::Error::new(
            sig.paren_token.span.join(),
            format!(
                "{what} `{name}` has no {input} parameter; take the {input} by value: \
                 `fn {name}(&self, {example})`"
            ),
        ));
    }
    if handler.output.is_none() {
        errors.push(syn::Error::new(
            sig.paren_token.span.close(),
            format!(
                "{what} `{name}` returns nothing; return `Result<E, Error>` where `E` is \
                 the event (or events) it decides on"
            ),
        ));
    }
    handler.valid = errors.len() == count;
}

fn applier_method(applier: &mut Applier, errors: &mut Errors) {
    let count = errors.len();
    let sig = &applier.original.sig;
    let name = &sig.ident;
    let shape = format!("`fn {name}(&mut self, event: &MyEvent)`");
    match applier.receiver {
        Receiver::MutRef => {}
        Receiver::Missing => errors.spanned(
            name,
            format!("#[apply] method `{name}` must take `&mut self`: {shape}"),
        ),
        Receiver::Ref | Receiver::Value => errors.spanned(
            &applier.self_param,
            format!("#[apply] method `{name}` must take `&mut self`: {shape}"),
        ),
    }
    if let Some(asyncness) = &sig.asyncness {
        errors.spanned(
            asyncness,
            format!(
                "#[apply] method `{name}` cannot be async; applying an event only changes the state"
            ),
        );
    }
    if !sig.generics.params.is_empty() {
        errors.spanned(
            &sig.generics,
            format!("#[apply] method `{name}` cannot be generic"),
        );
    }
    if let Some(ty) = &applier.returns {
        errors.spanned(
            ty,
            format!(
                "#[apply] method `{name}` returns a value, but events are facts and applying one \
                 cannot fail: remove the return type and only change `self`"
            ),
        );
    }
    match applier.params.as_slice() {
        [] => errors.push(syn::Error::new(
            sig.paren_token.span.join(),
            format!("#[apply] method `{name}` takes no event: {shape}"),
        )),
        [first, extra @ ..] => {
            if !matches!(&*first.ty, syn::Type::Reference(reference) if reference.mutability.is_none())
            {
                errors.spanned(
                    &first.ty,
                    format!(
                        "#[apply] method `{name}` takes the event by shared reference: {shape}"
                    ),
                );
            }
            for param in extra {
                errors.spanned(
                    param,
                    format!("unexpected parameter of #[apply] method `{name}`: {shape}"),
                );
            }
        }
    }
    applier.valid = errors.len() == count;
}

/// Whether a free `#[event_handler]` can be registered.
pub(crate) fn event_handler(input: &EventHandler, errors: &mut Errors) -> bool {
    let count = errors.len();
    let sig = &input.original.sig;
    let name = &sig.ident;
    let shape = format!(
        "`fn {name}(event: &MyEvent)` or `fn {name}(event: &MyEvent, envelope: &Envelope<MyEventEnum>)`"
    );
    if !sig.generics.params.is_empty() {
        errors.spanned(
            &sig.generics,
            format!("#[event_handler] `{name}` cannot be generic"),
        );
    }
    if let Some(syn::FnArg::Receiver(receiver)) = sig.inputs.first() {
        errors.spanned(
            receiver,
            "#[event_handler] goes on a free function, which registers itself; it cannot take `self`",
        );
    }
    let params = input.params();
    match params.as_slice() {
        [] => errors.push(syn::Error::new(
            sig.paren_token.span.join(),
            format!("#[event_handler] `{name}` takes no event: {shape}"),
        )),
        [event, rest @ ..] => {
            if input.event().is_none() {
                errors.spanned(
                    &event.ty,
                    format!(
                        "#[event_handler] `{name}` takes the event by shared reference: {shape}"
                    ),
                );
            }
            for (index, param) in rest.iter().enumerate() {
                if index > 0 || !matches!(&*param.ty, syn::Type::Reference(_)) {
                    errors.spanned(
                        param,
                        format!("unexpected parameter of #[event_handler] `{name}`: {shape}"),
                    );
                }
            }
        }
    }
    errors.len() == count
}

/// Drops the handlers with mistakes, after reporting them.
pub(crate) fn processor_impl(input: &mut ProcessorImpl, errors: &mut Errors) {
    let attribute = input.kind.attribute();
    if let Some((path, _)) = &input.original.trait_ {
        errors.spanned(
            path,
            format!("#[{attribute}] goes on an inherent impl block, not on an impl of a trait"),
        );
        input.original.trait_ = None;
    }
    if !input.original.generics.params.is_empty() {
        errors.spanned(
            &input.original.generics,
            format!("#[{attribute}] blocks cannot be generic"),
        );
    }
    if input.handlers.is_empty() {
        errors.spanned(
            &input.original.self_ty,
            format!("#[{attribute}] needs at least one #[event_handler] method"),
        );
    }
    let kind = input.kind;
    input
        .handlers
        .retain(|handler| processor_handler(handler, kind, errors));
    if kind != ProcessorKind::ProcessManager {
        for handler in input.deadline_handlers.drain(..) {
            errors.spanned(
                handler.ident(),
                "#[deadline] goes in a #[process_manager] or an #[aggregate_impl]; a projection schedules no deadlines",
            );
        }
    }
    input
        .deadline_handlers
        .retain(|handler| process_deadline(handler, errors));
}

/// A process manager's `#[deadline]` method: `&self`, the deadline by
/// value, then optionally `&ProcessContext` and `&DeadlineContext`.
fn process_deadline(handler: &ProcessDeadline, errors: &mut Errors) -> bool {
    let count = errors.len();
    let sig = &handler.original.sig;
    let name = &sig.ident;
    let shape = format!(
        "`async fn {name}(&self, deadline: MyDeadline, context: &ProcessContext<'_>, due: &DeadlineContext<'_>) -> Result<(), E>` \
         (the contexts are optional)"
    );
    if let Some(attr) = &handler.attr_args {
        errors.spanned(&attr.meta, "#[deadline] takes no arguments");
    }
    if !sig.generics.params.is_empty() {
        errors.spanned(
            &sig.generics,
            format!("deadline handler `{name}` cannot be generic"),
        );
    }
    match handler.receiver {
        Receiver::Ref => {}
        Receiver::Missing => errors.spanned(
            name,
            format!("deadline handler `{name}` of a process manager takes `&self`: {shape}"),
        ),
        Receiver::MutRef | Receiver::Value => errors.spanned(
            &handler.self_param,
            format!("unexpected receiver of deadline handler `{name}`: {shape}"),
        ),
    }
    let mut seen = Vec::new();
    for param in &handler.params {
        if param.kind == ProcessDeadlineParamKind::Unexpected || seen.contains(&param.kind) {
            errors.spanned(
                &param.original,
                format!("unexpected parameter of deadline handler `{name}`: {shape}"),
            );
        }
        seen.push(param.kind);
    }
    if handler.deadline().is_none() {
        errors.push(syn::Error::new(
            sig.paren_token.span.join(),
            format!("deadline handler `{name}` takes no deadline: {shape}"),
        ));
    }
    errors.len() == count
}

/// `tables(..)` and `migrations(..)` come together: the tables a
/// projection owns and the files that create them.
pub(crate) fn processor_args(args: &ProcessorArgs, errors: &mut Errors) {
    match (&args.tables, &args.migrations) {
        (Some(tables), None) => errors.spanned(
            &tables.key,
            "`tables(..)` needs `migrations(..)`, the files that create them: `migrations(sqlite(\"..\"), postgres(\"..\"))`",
        ),
        (None, Some(migrations)) => errors.spanned(
            &migrations.key,
            "`migrations(..)` needs `tables(..)`, the tables they create, by the names queries read",
        ),
        _ => {}
    }
}

fn processor_handler(handler: &ProcessorHandler, kind: ProcessorKind, errors: &mut Errors) -> bool {
    let count = errors.len();
    if let Some(attr) = &handler.attr_args {
        errors.spanned(&attr.meta, "#[event_handler] takes no arguments");
    }
    let sig = &handler.original.sig;
    let name = &sig.ident;
    let shape = match kind {
        ProcessorKind::Projection => format!(
            "`async fn {name}(event: &MyEvent, envelope: &Envelope, views: &mut Views<'_, Self>) -> Result<(), ViewError>` \
             (the envelope is optional)"
        ),
        ProcessorKind::TableProjection => format!(
            "`async fn {name}(event: &MyEvent, envelope: &Envelope, tables: &mut Tables<'_>) -> Result<(), HandlerError>` \
             (the envelope is optional)"
        ),
        ProcessorKind::ProcessManager => format!(
            "`async fn {name}(&self, event: &MyEvent, envelope: &Envelope, context: &ProcessContext<'_>) -> Result<(), E>` \
             (the envelope is optional)"
        ),
    };
    if !sig.generics.params.is_empty() {
        errors.spanned(
            &sig.generics,
            format!("event handler `{name}` cannot be generic"),
        );
    }
    let receiver_fits = match kind {
        ProcessorKind::Projection | ProcessorKind::TableProjection => {
            handler.receiver == Receiver::Missing
        }
        ProcessorKind::ProcessManager => {
            matches!(handler.receiver, Receiver::Ref | Receiver::Missing)
        }
    };
    if !receiver_fits {
        errors.spanned(
            &handler.self_param,
            format!("unexpected receiver of event handler `{name}`: {shape}"),
        );
    }
    let mut seen = Vec::new();
    for param in &handler.params {
        let fits = match param.kind {
            ProcessorParamKind::Views { mutable } => mutable && kind == ProcessorKind::Projection,
            ProcessorParamKind::Tables { mutable } => {
                mutable && kind == ProcessorKind::TableProjection
            }
            ProcessorParamKind::Context => kind == ProcessorKind::ProcessManager,
            ProcessorParamKind::Unexpected => false,
            ProcessorParamKind::Event | ProcessorParamKind::Envelope => true,
        };
        let hint = match (param.kind, kind) {
            (ProcessorParamKind::Views { .. }, ProcessorKind::TableProjection) => Some(format!(
                "a projection with `tables(..)` writes its tables, not views: event handler `{name}` takes `tables: &mut Tables<'_>`"
            )),
            (ProcessorParamKind::Tables { .. }, ProcessorKind::Projection) => Some(format!(
                "event handler `{name}` takes `&mut Tables`, but its projection owns no tables: add `tables(..)` and `migrations(..)` to #[projection(..)]"
            )),
            _ => None,
        };
        if let Some(hint) = hint {
            errors.spanned(&param.original, hint);
        } else if !fits || seen.contains(&param.kind) {
            errors.spanned(
                &param.original,
                format!("unexpected parameter of event handler `{name}`: {shape}"),
            );
        }
        seen.push(param.kind);
    }
    if kind == ProcessorKind::ProcessManager && handler.receiver == Receiver::Missing {
        errors.spanned(
            name,
            format!("event handler `{name}` of a process manager takes `&self`: {shape}"),
        );
    }
    if handler.event().is_none() {
        errors.push(syn::Error::new(
            sig.paren_token.span.join(),
            format!("event handler `{name}` takes no event: {shape}"),
        ));
    }
    errors.len() == count
}

fn no_generics(input: &DeriveInput, kind: &str, errors: &mut Errors) {
    if !is_plain(&input.generics) {
        errors.spanned(
            &input.generics,
            format!("a {kind} type cannot be generic: its registration and stored names are fixed"),
        );
    }
}

fn is_plain(generics: &Generics) -> bool {
    generics.params.is_empty()
}

/// A decision names its boundary by at least one `#[tag]` field.
pub(crate) fn decision(input: &DecisionStruct, errors: &mut Errors) {
    if !input.original.generics.params.is_empty() {
        errors.spanned(
            &input.original.generics,
            "#[derive(DecisionModel)] structs cannot be generic",
        );
    }
    if input.tags.is_empty() && matches!(input.original.data, syn::Data::Struct(_)) {
        errors.spanned(
            &input.original.ident,
            "a decision needs a #[tag] field: its tags select the events it decides on",
        );
    }
}

/// A decision decides on one command, at once, from the command alone.
pub(crate) fn decision_impl(input: &mut AggregateImpl, errors: &mut Errors) {
    for handler in &input.deadline_handlers {
        errors.spanned(
            handler.ident(),
            "a decision has no deadlines: #[deadline] handlers belong to aggregates and process managers",
        );
    }
    if input.command_handlers.is_empty() && !input.lost_command {
        errors.spanned(
            &input.original.self_ty,
            "a #[decision_impl] block needs one #[command_handler]: the command the decision decides on",
        );
    }
    for extra in input.command_handlers.iter().skip(1) {
        errors.spanned(
            extra.ident(),
            "a decision decides on one command: give this command a decision of its own",
        );
    }
    for handler in &mut input.command_handlers {
        if handler.is_async() {
            errors.spanned(
                handler.original.sig.asyncness,
                "a decision's #[command_handler] decides at once on the events it read: remove `async`",
            );
            handler.valid = false;
        }
        for param in &handler.params {
            if !matches!(param.kind, ParamKind::Input) {
                errors.spanned(
                    &param.original,
                    "a decision's #[command_handler] takes `&self` and the command alone",
                );
                handler.valid = false;
            }
        }
    }
}
