//! The user's items as this crate sees them. Every node keeps the syn node it
//! came from, for spans. Shapes the macros cannot use are reported here.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{
    Attribute, DeriveInput, FnArg, GenericArgument, Ident, ImplItem, ImplItemFn, ItemFn, ItemImpl,
    PathArguments, ReturnType, Type,
};

use crate::attr::{self, AggregateAttr, CommandHandlerAttr, EventAttr};
use crate::errors::Errors;

/// A struct with `#[derive(Aggregate)]`.
pub(crate) struct Aggregate<'a> {
    pub(crate) original: &'a DeriveInput,
    pub(crate) attr: Option<AggregateAttr<'a>>,
}

/// An enum with `#[derive(Command)]` or `#[derive(Event)]`: one variant per
/// wrapped type.
pub(crate) struct Enum<'a> {
    pub(crate) original: &'a DeriveInput,
    pub(crate) variants: Vec<Variant<'a>>,
    /// False when a variant was left out for a reported mistake.
    pub(crate) complete: bool,
}

pub(crate) struct Variant<'a> {
    pub(crate) original: &'a syn::Variant,
    pub(crate) ident: &'a Ident,
    pub(crate) ty: &'a Type,
    /// Only read for events.
    pub(crate) event: EventAttr,
}

/// An `#[aggregate_impl]` block.
pub(crate) struct AggregateImpl {
    pub(crate) original: ItemImpl,
    pub(crate) command_handlers: Vec<CommandHandler>,
    pub(crate) appliers: Vec<Applier>,
    /// A broken `#[command_handler]` whose command type cannot be told: every
    /// command gets a placeholder handler, so none is reported as unhandled.
    pub(crate) lost_command: bool,
    /// The same for a broken `#[apply]`.
    pub(crate) lost_event: bool,
}

/// A `#[command_handler]` method.
pub(crate) struct CommandHandler {
    pub(crate) ident: Ident,
    /// False when the method has mistakes: only a placeholder impl is emitted,
    /// so the command does not also show up as unhandled.
    pub(crate) valid: bool,
    pub(crate) attr: CommandHandlerAttr,
    pub(crate) is_async: bool,
    pub(crate) command: Type,
    /// What the method takes after `&self`, in order.
    pub(crate) params: Vec<Param>,
    pub(crate) output: Output,
}

#[derive(Clone, Copy)]
pub(crate) enum Param {
    Command,
    Context,
    Services(Span),
}

/// Where rustc should point when the return type does not fit.
pub(crate) struct Output {
    /// The whole return type.
    pub(crate) span: Span,
    /// `R` in `Result<R, E>`, when written that way.
    pub(crate) events: Span,
    /// `E` in `Result<R, E>`, when written that way.
    pub(crate) error: Span,
}

/// An `#[apply]` method.
pub(crate) struct Applier {
    pub(crate) ident: Ident,
    /// False when the method has mistakes; see `CommandHandler::valid`.
    pub(crate) valid: bool,
    pub(crate) event: Type,
}

/// An impl block with `#[projection(..)]` or `#[process_manager(..)]`.
pub(crate) struct ProcessorImpl {
    pub(crate) original: ItemImpl,
    pub(crate) kind: ProcessorKind,
    pub(crate) handlers: Vec<ProcessorHandler>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProcessorKind {
    Projection,
    ProcessManager,
}

impl ProcessorKind {
    pub(crate) fn attribute(self) -> &'static str {
        match self {
            ProcessorKind::Projection => "projection",
            ProcessorKind::ProcessManager => "process_manager",
        }
    }
}

/// An `#[event_handler]` method of a projection or process manager.
pub(crate) struct ProcessorHandler {
    pub(crate) ident: Ident,
    pub(crate) is_async: bool,
    pub(crate) event: Type,
    pub(crate) params: Vec<ProcessorParam>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProcessorParam {
    SelfRef,
    Event,
    Envelope,
    /// `&mut Views<Self>` of a projection.
    Views,
    /// `&ProcessContext` of a process manager.
    Context,
}

/// A free function with `#[event_handler]`.
pub(crate) struct EventHandler {
    pub(crate) original: ItemFn,
    pub(crate) event: Type,
    pub(crate) takes_envelope: bool,
}

impl<'a> Aggregate<'a> {
    pub(crate) fn from_syn(input: &'a DeriveInput, errors: &mut Errors) -> Self {
        if !matches!(input.data, syn::Data::Struct(_)) {
            errors.spanned(
                &input.ident,
                "#[derive(Aggregate)] goes on the struct that holds the aggregate's state",
            );
        }
        no_generics(input, "aggregate", errors);
        let attr = attr::aggregate(&input.attrs, errors);
        Aggregate {
            original: input,
            attr,
        }
    }
}

impl Variant<'_> {
    /// The name the log keeps: `#[event(name = ..)]`, else the wrapped type's
    /// name as written.
    pub(crate) fn stored_name(&self) -> String {
        match &self.event.name {
            Some(name) => name.value(),
            None => type_name(self.ty),
        }
    }

    pub(crate) fn version(&self) -> u32 {
        self.event.version.map_or(1, |(version, _)| version)
    }
}

/// The last path segment of a type without its generics, else its tokens.
pub(crate) fn type_name(ty: &Type) -> String {
    match ty {
        Type::Path(path) if path.qself.is_none() => path
            .path
            .segments
            .last()
            .map(|segment| segment.ident.to_string())
            .unwrap_or_default(),
        ty => ty.to_token_stream().to_string(),
    }
}

impl<'a> Enum<'a> {
    /// `kind` is "command" or "event", for messages.
    pub(crate) fn from_syn(input: &'a DeriveInput, kind: &str, errors: &mut Errors) -> Self {
        let derive = if kind == "command" {
            "Command"
        } else {
            "Event"
        };
        let data = match &input.data {
            syn::Data::Enum(data) => data,
            _ => {
                let keyword = match &input.data {
                    syn::Data::Struct(data) => data.struct_token.to_token_stream(),
                    syn::Data::Union(data) => data.union_token.to_token_stream(),
                    syn::Data::Enum(data) => data.enum_token.to_token_stream(),
                };
                errors.spanned(
                    keyword,
                    format!(
                        "#[derive({derive})] goes on an enum whose variants each wrap one {kind} type, \
                         e.g. `enum {}{} {{ Variant({}Type) }}`",
                        input.ident,
                        if input.ident.to_string().ends_with(derive) { "" } else { derive },
                        capitalize(kind),
                    ),
                );
                return Enum {
                    original: input,
                    variants: Vec::new(),
                    complete: false,
                };
            }
        };
        no_generics(input, kind, errors);
        if data.variants.is_empty() {
            errors.spanned(
                &input.ident,
                format!(
                    "`{}` has no variants; add one per {kind} type, e.g. `Variant({}Type)`",
                    input.ident,
                    capitalize(kind)
                ),
            );
        }
        let mut variants = Vec::new();
        let mut complete = true;
        for variant in &data.variants {
            let event = if kind == "event" {
                attr::event(&variant.attrs, errors)
            } else {
                EventAttr::default()
            };
            // A mistake in `#[event(..)]` is reported and the variant keeps the
            // defaults, so the rest of the expansion stays whole.
            match single_field(&variant.fields) {
                Some(ty) => variants.push(Variant {
                    original: variant,
                    ident: &variant.ident,
                    ty,
                    event,
                }),
                None => {
                    complete = false;
                    errors.spanned(
                        variant,
                        format!(
                            "variant `{0}` must wrap exactly one {kind} type, like `{0}({1}Type)`",
                            variant.ident,
                            capitalize(kind),
                        ),
                    );
                }
            }
        }
        Enum {
            original: input,
            variants,
            complete,
        }
    }
}

impl AggregateImpl {
    pub(crate) fn from_syn(mut original: ItemImpl, errors: &mut Errors) -> Self {
        let mut lost_command = false;
        let mut lost_event = false;
        if let Some((path, _)) = &original.trait_ {
            lost_command = true;
            lost_event = true;
            errors.spanned(
                path,
                format!(
                    "#[aggregate_impl] goes on an inherent impl of the aggregate, `impl {} {{ .. }}`, not on an impl of `{}`",
                    original.self_ty.to_token_stream(),
                    path.to_token_stream(),
                ),
            );
        }
        if !original.generics.params.is_empty() {
            errors.spanned(
                &original.generics,
                "#[aggregate_impl] blocks cannot be generic",
            );
        }
        let mut command_handlers = Vec::new();
        let mut appliers = Vec::new();
        for item in &mut original.items {
            let ImplItem::Fn(method) = item else {
                continue;
            };
            let handler_attr = take_attr(&mut method.attrs, "command_handler");
            let apply_attr = take_attr(&mut method.attrs, "apply");
            match (handler_attr, apply_attr) {
                (Some(handler), Some(_)) => errors.spanned(
                    handler,
                    format!(
                        "`{}` is marked both #[command_handler] and #[apply]; a method either decides or applies",
                        method.sig.ident
                    ),
                ),
                (Some(handler), None) => {
                    let args = match &handler.meta {
                        syn::Meta::List(list) => list.tokens.clone(),
                        _ => TokenStream::new(),
                    };
                    if let syn::Meta::NameValue(_) = handler.meta {
                        errors.spanned(&handler, "write #[command_handler] or #[command_handler(create)]");
                    }
                    let attr = attr::command_handler(args, errors);
                    match CommandHandler::from_syn(method, attr, errors) {
                        Some(handler) => command_handlers.push(handler),
                        None => lost_command = true,
                    }
                }
                (None, Some(apply)) => {
                    attr::no_args(&apply, errors);
                    match Applier::from_syn(method, errors) {
                        Some(applier) => appliers.push(applier),
                        None => lost_event = true,
                    }
                }
                (None, None) => {}
            }
        }
        if lost_command || lost_event {
            // The trait part is already reported; what is left is the methods.
            original.trait_ = None;
        }
        AggregateImpl {
            original,
            command_handlers,
            appliers,
            lost_command,
            lost_event,
        }
    }
}

impl CommandHandler {
    fn from_syn(
        method: &ImplItemFn,
        attr: CommandHandlerAttr,
        errors: &mut Errors,
    ) -> Option<Self> {
        let sig = &method.sig;
        let name = &sig.ident;
        let error_count = errors.len();
        match sig.receiver() {
            Some(receiver) if receiver_is_mut_ref(receiver) => errors.spanned(
                receiver,
                format!(
                    "command handler `{name}` takes `&mut self`, but command handlers only decide: \
                     take `&self` and change the state in the #[apply] method of the event it returns"
                ),
            ),
            Some(receiver) if !receiver_is_ref(receiver) => errors.spanned(
                receiver,
                format!("command handler `{name}` must take `&self`"),
            ),
            Some(_) => {}
            None => errors.spanned(
                name,
                format!("command handler `{name}` must take `&self` first"),
            ),
        }
        if !sig.generics.params.is_empty() {
            errors.spanned(
                &sig.generics,
                format!("command handler `{name}` cannot be generic"),
            );
        }

        let mut command = None;
        let mut params = Vec::new();
        let expected = "command handlers take `&self`, the command by value, and optionally \
                        `&CommandContext` and the aggregate's services as `&Services`";
        for input in &sig.inputs {
            let FnArg::Typed(typed) = input else { continue };
            let param = match &*typed.ty {
                Type::Reference(reference) if reference.mutability.is_some() => None,
                Type::Reference(reference)
                    if last_segment_is(&reference.elem, "CommandContext") =>
                {
                    Some(Param::Context)
                }
                Type::Reference(reference) => Some(Param::Services(reference.span())),
                ty => {
                    if command.is_none() {
                        command = Some(ty.clone());
                        Some(Param::Command)
                    } else {
                        None
                    }
                }
            };
            let repeated = param.is_some_and(|param| {
                params
                    .iter()
                    .any(|seen| std::mem::discriminant(seen) == std::mem::discriminant(&param))
            });
            match param {
                Some(param) if !repeated => params.push(param),
                _ => errors.spanned(
                    typed,
                    format!(
                        "unexpected parameter `{}` of command handler `{name}`: {expected}",
                        typed.pat.to_token_stream()
                    ),
                ),
            }
        }
        if command.is_none() {
            errors.push(syn::Error::new(
                sig.paren_token.span.join(),
                format!(
                    "command handler `{name}` has no command parameter; take the command by value: \
                     `fn {name}(&self, command: MyCommand)`"
                ),
            ));
        }
        let output = match &sig.output {
            ReturnType::Type(_, ty) => Output::of(ty),
            ReturnType::Default => {
                errors.push(syn::Error::new(
                    sig.paren_token.span.close(),
                    format!(
                        "command handler `{name}` returns nothing; return `Result<E, Error>` where `E` is \
                         the event (or events) it decides on"
                    ),
                ));
                Output::of(&syn::parse_quote!(()))
            }
        };
        Some(CommandHandler {
            ident: name.clone(),
            valid: errors.len() == error_count,
            attr,
            is_async: sig.asyncness.is_some(),
            command: command?,
            params,
            output,
        })
    }
}

impl Output {
    fn of(ty: &Type) -> Self {
        let span = ty.span();
        if let Type::Path(path) = ty
            && let Some(segment) = path.path.segments.last()
            && let PathArguments::AngleBracketed(args) = &segment.arguments
        {
            let types: Vec<&Type> = args
                .args
                .iter()
                .filter_map(|arg| match arg {
                    GenericArgument::Type(ty) => Some(ty),
                    _ => None,
                })
                .collect();
            if segment.ident == "Result" && types.len() == 2 {
                return Output {
                    span,
                    events: types[0].span(),
                    error: types[1].span(),
                };
            }
        }
        Output {
            span,
            events: span,
            error: span,
        }
    }
}

impl Applier {
    fn from_syn(method: &ImplItemFn, errors: &mut Errors) -> Option<Self> {
        let sig = &method.sig;
        let name = &sig.ident;
        let shape = format!("`fn {name}(&mut self, event: &MyEvent)`");
        let error_count = errors.len();
        match sig.receiver() {
            Some(receiver) if receiver_is_mut_ref(receiver) => {}
            Some(receiver) => errors.spanned(
                receiver,
                format!("#[apply] method `{name}` must take `&mut self`: {shape}"),
            ),
            None => errors.spanned(
                name,
                format!("#[apply] method `{name}` must take `&mut self`: {shape}"),
            ),
        }
        if let Some(asyncness) = &sig.asyncness {
            errors.spanned(
                asyncness,
                format!("#[apply] method `{name}` cannot be async; applying an event only changes the state"),
            );
        }
        if !sig.generics.params.is_empty() {
            errors.spanned(
                &sig.generics,
                format!("#[apply] method `{name}` cannot be generic"),
            );
        }
        if let ReturnType::Type(_, ty) = &sig.output
            && !is_unit(ty)
        {
            errors.spanned(
                ty,
                format!(
                    "#[apply] method `{name}` returns a value, but events are facts and applying one \
                     cannot fail: remove the return type and only change `self`"
                ),
            );
        }
        let typed: Vec<_> = sig
            .inputs
            .iter()
            .filter_map(|input| match input {
                FnArg::Typed(typed) => Some(typed),
                FnArg::Receiver(_) => None,
            })
            .collect();
        let event = match typed.as_slice() {
            [only] => {
                match &*only.ty {
                    Type::Reference(reference) if reference.mutability.is_none() => {
                        Some((*reference.elem).clone())
                    }
                    ty => {
                        errors.spanned(
                        ty,
                        format!("#[apply] method `{name}` takes the event by shared reference: {shape}"),
                    );
                        match ty {
                            Type::Reference(reference) => Some((*reference.elem).clone()),
                            ty => Some(ty.clone()),
                        }
                    }
                }
            }
            [] => {
                errors.push(syn::Error::new(
                    sig.paren_token.span.join(),
                    format!("#[apply] method `{name}` takes no event: {shape}"),
                ));
                None
            }
            [first, extra @ ..] => {
                for param in extra {
                    errors.spanned(
                        param,
                        format!("unexpected parameter of #[apply] method `{name}`: {shape}"),
                    );
                }
                match &*first.ty {
                    Type::Reference(reference) => Some((*reference.elem).clone()),
                    _ => None,
                }
            }
        };
        Some(Applier {
            ident: name.clone(),
            valid: errors.len() == error_count,
            event: event?,
        })
    }
}

impl EventHandler {
    pub(crate) fn from_syn(original: ItemFn, errors: &mut Errors) -> Option<Self> {
        let sig = &original.sig;
        let name = &sig.ident;
        let shape = format!(
            "`fn {name}(event: &MyEvent)` or `fn {name}(event: &MyEvent, envelope: &Envelope<MyEventEnum>)`"
        );
        let error_count = errors.len();
        if !sig.generics.params.is_empty() {
            errors.spanned(
                &sig.generics,
                format!("#[event_handler] `{name}` cannot be generic"),
            );
        }
        let mut event = None;
        let mut takes_envelope = false;
        for (index, input) in sig.inputs.iter().enumerate() {
            match (index, input) {
                (_, FnArg::Receiver(receiver)) => errors.spanned(
                    receiver,
                    "#[event_handler] goes on a free function, which registers itself; it cannot take `self`",
                ),
                (0, FnArg::Typed(typed)) => match &*typed.ty {
                    Type::Reference(reference) if reference.mutability.is_none() => {
                        event = Some((*reference.elem).clone());
                    }
                    ty => errors.spanned(
                        ty,
                        format!("#[event_handler] `{name}` takes the event by shared reference: {shape}"),
                    ),
                },
                (1, FnArg::Typed(typed)) if matches!(&*typed.ty, Type::Reference(_)) => takes_envelope = true,
                (_, FnArg::Typed(typed)) => errors.spanned(
                    typed,
                    format!("unexpected parameter of #[event_handler] `{name}`: {shape}"),
                ),
            }
        }
        if sig.inputs.is_empty() {
            errors.push(syn::Error::new(
                sig.paren_token.span.join(),
                format!("#[event_handler] `{name}` takes no event: {shape}"),
            ));
        }
        if errors.len() > error_count {
            return None;
        }
        Some(EventHandler {
            event: event?,
            takes_envelope,
            original,
        })
    }
}

impl ProcessorImpl {
    pub(crate) fn from_syn(
        mut original: ItemImpl,
        kind: ProcessorKind,
        errors: &mut Errors,
    ) -> Self {
        let attribute = kind.attribute();
        if let Some((path, _)) = &original.trait_ {
            errors.spanned(
                path,
                format!("#[{attribute}] goes on an inherent impl block, not on an impl of a trait"),
            );
            original.trait_ = None;
        }
        if !original.generics.params.is_empty() {
            errors.spanned(
                &original.generics,
                format!("#[{attribute}] blocks cannot be generic"),
            );
        }
        let mut handlers = Vec::new();
        let mut marked = 0;
        for item in &mut original.items {
            let ImplItem::Fn(method) = item else {
                continue;
            };
            let Some(attr) = take_attr(&mut method.attrs, "event_handler") else {
                continue;
            };
            marked += 1;
            attr::no_args(&attr, errors);
            if let Some(handler) = ProcessorHandler::from_syn(method, kind, errors) {
                handlers.push(handler);
            }
        }
        if marked == 0 {
            errors.spanned(
                &original.self_ty,
                format!("#[{attribute}] needs at least one #[event_handler] method"),
            );
        }
        ProcessorImpl {
            original,
            kind,
            handlers,
        }
    }
}

impl ProcessorHandler {
    fn from_syn(method: &ImplItemFn, kind: ProcessorKind, errors: &mut Errors) -> Option<Self> {
        let sig = &method.sig;
        let name = &sig.ident;
        let shape = match kind {
            ProcessorKind::Projection => format!(
                "`async fn {name}(event: &MyEvent, envelope: &Envelope, views: &mut Views<'_, Self>) -> Result<(), ViewError>` \
                 (the envelope is optional)"
            ),
            ProcessorKind::ProcessManager => format!(
                "`async fn {name}(&self, event: &MyEvent, envelope: &Envelope, context: &ProcessContext<'_>) -> Result<(), E>` \
                 (the envelope is optional)"
            ),
        };
        let error_count = errors.len();
        if !sig.generics.params.is_empty() {
            errors.spanned(
                &sig.generics,
                format!("event handler `{name}` cannot be generic"),
            );
        }
        let mut event = None;
        let mut params = Vec::new();
        for input in &sig.inputs {
            let param = match input {
                FnArg::Receiver(receiver) => {
                    if kind == ProcessorKind::Projection
                        || !receiver_is_ref(receiver)
                        || receiver_is_mut_ref(receiver)
                    {
                        errors.spanned(
                            receiver,
                            format!("unexpected receiver of event handler `{name}`: {shape}"),
                        );
                        continue;
                    }
                    ProcessorParam::SelfRef
                }
                FnArg::Typed(typed) => match &*typed.ty {
                    Type::Reference(reference) if last_segment_is(&reference.elem, "Views") => {
                        if kind != ProcessorKind::Projection || reference.mutability.is_none() {
                            errors.spanned(
                                typed,
                                format!("unexpected parameter of event handler `{name}`: {shape}"),
                            );
                            continue;
                        }
                        ProcessorParam::Views
                    }
                    Type::Reference(reference)
                        if last_segment_is(&reference.elem, "ProcessContext") =>
                    {
                        if kind != ProcessorKind::ProcessManager {
                            errors.spanned(
                                typed,
                                format!("unexpected parameter of event handler `{name}`: {shape}"),
                            );
                            continue;
                        }
                        ProcessorParam::Context
                    }
                    Type::Reference(reference) if last_segment_is(&reference.elem, "Envelope") => {
                        ProcessorParam::Envelope
                    }
                    Type::Reference(reference)
                        if reference.mutability.is_none() && event.is_none() =>
                    {
                        event = Some((*reference.elem).clone());
                        ProcessorParam::Event
                    }
                    _ => {
                        errors.spanned(
                            typed,
                            format!("unexpected parameter of event handler `{name}`: {shape}"),
                        );
                        continue;
                    }
                },
            };
            if params.contains(&param) {
                errors.spanned(
                    input,
                    format!("unexpected parameter of event handler `{name}`: {shape}"),
                );
            }
            params.push(param);
        }
        if kind == ProcessorKind::ProcessManager && !params.contains(&ProcessorParam::SelfRef) {
            errors.spanned(
                name,
                format!("event handler `{name}` of a process manager takes `&self`: {shape}"),
            );
        }
        if event.is_none() {
            errors.push(syn::Error::new(
                sig.paren_token.span.join(),
                format!("event handler `{name}` takes no event: {shape}"),
            ));
        }
        if errors.len() > error_count {
            return None;
        }
        Some(ProcessorHandler {
            ident: name.clone(),
            is_async: sig.asyncness.is_some(),
            event: event?,
            params,
        })
    }
}

fn no_generics(input: &DeriveInput, kind: &str, errors: &mut Errors) {
    if !input.generics.params.is_empty() {
        errors.spanned(
            &input.generics,
            format!("a {kind} type cannot be generic: its registration and stored names are fixed"),
        );
    }
}

fn single_field(fields: &syn::Fields) -> Option<&Type> {
    match fields {
        syn::Fields::Unnamed(fields) if fields.unnamed.len() == 1 => {
            fields.unnamed.first().map(|field| &field.ty)
        }
        _ => None,
    }
}

/// Removes the attribute named `name` (or a path ending in it) and returns it.
fn take_attr(attrs: &mut Vec<Attribute>, name: &str) -> Option<Attribute> {
    let index = attrs.iter().position(|attr| {
        attr.path()
            .segments
            .last()
            .is_some_and(|segment| segment.ident == name)
    })?;
    Some(attrs.remove(index))
}

fn receiver_is_ref(receiver: &syn::Receiver) -> bool {
    matches!(receiver.kind, syn::ReceiverKind::Reference(..))
}

fn receiver_is_mut_ref(receiver: &syn::Receiver) -> bool {
    matches!(receiver.kind, syn::ReceiverKind::Reference(_, _, Some(_)))
}

fn last_segment_is(ty: &Type, name: &str) -> bool {
    matches!(ty, Type::Path(path) if path.path.segments.last().is_some_and(|segment| segment.ident == name))
}

fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(tuple) if tuple.elems.is_empty())
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}
