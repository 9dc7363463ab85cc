//! The user's items as this crate sees them: what was written, including
//! what is wrong with it, for `valid.rs` to judge and `expand/` to emit.
//! Every node keeps the syn item it came from. Only a shape the model
//! cannot hold at all (a derive on a struct, a variant wrapping two types)
//! is reported here.

use proc_macro2::Span;
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{
    Attribute, DeriveInput, FnArg, GenericArgument, Ident, ImplItem, ImplItemFn, ItemFn, ItemImpl,
    PatType, PathArguments, ReturnType, Type,
};

use crate::attr::{self, AggregateAttr, CommandHandlerAttr, EventAttr, EventHandlerAttr};
use crate::errors::Errors;

/// Which derive an enum has.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum EnumKind {
    Command,
    Event,
}

impl EnumKind {
    /// The derive's name, `Command` or `Event`.
    pub(crate) fn derive(self) -> &'static str {
        match self {
            EnumKind::Command => "Command",
            EnumKind::Event => "Event",
        }
    }

    /// The word for one variant's type, in messages.
    pub(crate) fn noun(self) -> &'static str {
        match self {
            EnumKind::Command => "command",
            EnumKind::Event => "event",
        }
    }
}

/// A struct with `#[derive(Aggregate)]`.
pub(crate) struct Aggregate<'a> {
    pub(crate) original: &'a DeriveInput,
    pub(crate) attr: Option<AggregateAttr<'a>>,
}

/// An enum with `#[derive(Command)]` or `#[derive(Event)]`: one variant per
/// wrapped type.
pub(crate) struct Enum<'a> {
    pub(crate) original: &'a DeriveInput,
    pub(crate) kind: EnumKind,
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
    /// A method marked both `#[command_handler]` and `#[apply]`.
    pub(crate) marked_twice: Vec<Ident>,
    /// A broken `#[command_handler]` whose command type cannot be told: every
    /// command gets a placeholder handler, so none is reported as unhandled.
    /// Set by validation.
    pub(crate) lost_command: bool,
    /// The same for a broken `#[apply]`.
    pub(crate) lost_event: bool,
}

/// How a method takes `self`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Receiver {
    Ref,
    MutRef,
    /// `self` or `mut self`.
    Value,
    /// No `self` at all.
    Missing,
}

impl Receiver {
    fn of(
        inputs: &syn::punctuated::Punctuated<FnArg, syn::Token![,]>,
    ) -> (Self, Option<syn::Receiver>) {
        match inputs.first() {
            Some(FnArg::Receiver(receiver)) => {
                let kind = match &receiver.kind {
                    syn::ReceiverKind::Reference(_, _, Some(_)) => Receiver::MutRef,
                    syn::ReceiverKind::Reference(..) => Receiver::Ref,
                    _ => Receiver::Value,
                };
                (kind, Some(receiver.clone()))
            }
            _ => (Receiver::Missing, None),
        }
    }
}

/// A `#[command_handler]` method.
pub(crate) struct CommandHandler {
    pub(crate) original: ImplItemFn,
    pub(crate) attr: CommandHandlerAttr,
    pub(crate) receiver: Receiver,
    pub(crate) self_param: Option<syn::Receiver>,
    /// What the method takes after `self`, in order.
    pub(crate) params: Vec<Param>,
    /// `None` when the method returns nothing.
    pub(crate) output: Option<Output>,
    /// False when the method has mistakes: only a placeholder impl is emitted,
    /// so the command does not also show up as unhandled. Set by validation.
    pub(crate) valid: bool,
}

/// One parameter of a command handler, as classified by its type.
pub(crate) struct Param {
    pub(crate) original: PatType,
    pub(crate) kind: ParamKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParamKind {
    /// Taken by value: the command (only the first is).
    Command,
    /// `&CommandContext`.
    Context,
    /// Any other shared reference: the aggregate's services.
    Services,
    /// A `&mut` reference.
    Unexpected,
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
    pub(crate) original: ImplItemFn,
    pub(crate) receiver: Receiver,
    pub(crate) self_param: Option<syn::Receiver>,
    /// What the method takes after `self`.
    pub(crate) params: Vec<PatType>,
    /// A return type other than `()`.
    pub(crate) returns: Option<Type>,
    /// False when the method has mistakes; see `CommandHandler::valid`.
    pub(crate) valid: bool,
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
    pub(crate) original: ImplItemFn,
    /// `#[event_handler(..)]` with arguments, which methods do not take.
    pub(crate) attr_args: Option<Attribute>,
    pub(crate) receiver: Receiver,
    pub(crate) self_param: Option<syn::Receiver>,
    pub(crate) params: Vec<ProcessorParam>,
}

/// One parameter of a processor's handler, as classified by its type.
pub(crate) struct ProcessorParam {
    pub(crate) original: PatType,
    pub(crate) kind: ProcessorParamKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProcessorParamKind {
    /// A shared reference to anything else: the event (only the first is).
    Event,
    /// `&Envelope`.
    Envelope,
    /// `&mut Views<Self>` (or `&Views`, which validation refuses).
    Views { mutable: bool },
    /// `&ProcessContext`.
    Context,
    /// Not a reference, or a second event.
    Unexpected,
}

/// A free function with `#[event_handler]`.
pub(crate) struct EventHandler {
    pub(crate) original: ItemFn,
    pub(crate) attr: EventHandlerAttr,
}

impl<'a> Aggregate<'a> {
    pub(crate) fn from_syn(input: &'a DeriveInput, errors: &mut Errors) -> Self {
        if !matches!(input.data, syn::Data::Struct(_)) {
            errors.spanned(
                &input.ident,
                "#[derive(Aggregate)] goes on the struct that holds the aggregate's state",
            );
        }
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
    pub(crate) fn from_syn(input: &'a DeriveInput, kind: EnumKind, errors: &mut Errors) -> Self {
        let (derive, noun) = (kind.derive(), kind.noun());
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
                        "#[derive({derive})] goes on an enum whose variants each wrap one {noun} type, \
                         e.g. `enum {}{} {{ Variant({derive}Type) }}`",
                        input.ident,
                        if input.ident.to_string().ends_with(derive) { "" } else { derive },
                    ),
                );
                return Enum {
                    original: input,
                    kind,
                    variants: Vec::new(),
                    complete: false,
                };
            }
        };
        let mut variants = Vec::new();
        let mut complete = true;
        for variant in &data.variants {
            let event = match kind {
                EnumKind::Event => attr::event(&variant.attrs, errors),
                EnumKind::Command => EventAttr::default(),
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
                            "variant `{0}` must wrap exactly one {noun} type, like `{0}({derive}Type)`",
                            variant.ident,
                        ),
                    );
                }
            }
        }
        Enum {
            original: input,
            kind,
            variants,
            complete,
        }
    }
}

impl AggregateImpl {
    pub(crate) fn from_syn(mut original: ItemImpl, errors: &mut Errors) -> Self {
        let mut command_handlers = Vec::new();
        let mut appliers = Vec::new();
        let mut marked_twice = Vec::new();
        for item in &mut original.items {
            let ImplItem::Fn(method) = item else {
                continue;
            };
            let handler_attr = take_attr(&mut method.attrs, "command_handler");
            let apply_attr = take_attr(&mut method.attrs, "apply");
            match (handler_attr, apply_attr) {
                (Some(_), Some(_)) => marked_twice.push(method.sig.ident.clone()),
                (Some(handler), None) => {
                    let args = match &handler.meta {
                        syn::Meta::List(list) => list.tokens.clone(),
                        syn::Meta::NameValue(_) => {
                            errors.spanned(
                                &handler,
                                "write #[command_handler] or #[command_handler(create)]",
                            );
                            proc_macro2::TokenStream::new()
                        }
                        syn::Meta::Path(_) => proc_macro2::TokenStream::new(),
                    };
                    let attr = attr::command_handler(args, errors);
                    command_handlers.push(CommandHandler::from_syn(method.clone(), attr));
                }
                (None, Some(apply)) => {
                    attr::no_args(&apply, errors);
                    appliers.push(Applier::from_syn(method.clone()));
                }
                (None, None) => {}
            }
        }
        AggregateImpl {
            original,
            command_handlers,
            appliers,
            marked_twice,
            lost_command: false,
            lost_event: false,
        }
    }
}

impl CommandHandler {
    fn from_syn(original: ImplItemFn, attr: CommandHandlerAttr) -> Self {
        let (receiver, self_param) = Receiver::of(&original.sig.inputs);
        let mut params = Vec::new();
        let mut has_command = false;
        for input in &original.sig.inputs {
            let FnArg::Typed(typed) = input else { continue };
            let kind = match &*typed.ty {
                Type::Reference(reference) if reference.mutability.is_some() => {
                    ParamKind::Unexpected
                }
                Type::Reference(reference)
                    if last_segment_is(&reference.elem, "CommandContext") =>
                {
                    ParamKind::Context
                }
                Type::Reference(_) => ParamKind::Services,
                _ if !has_command => {
                    has_command = true;
                    ParamKind::Command
                }
                _ => ParamKind::Unexpected,
            };
            params.push(Param {
                original: typed.clone(),
                kind,
            });
        }
        let output = match &original.sig.output {
            ReturnType::Type(_, ty) => Some(Output::of(ty)),
            ReturnType::Default => None,
        };
        CommandHandler {
            original,
            attr,
            receiver,
            self_param,
            params,
            output,
            valid: true,
        }
    }

    pub(crate) fn ident(&self) -> &Ident {
        &self.original.sig.ident
    }

    /// The command the handler takes, its first by-value parameter.
    pub(crate) fn command(&self) -> Option<&Type> {
        self.params
            .iter()
            .find(|param| param.kind == ParamKind::Command)
            .map(|param| &*param.original.ty)
    }

    pub(crate) fn is_async(&self) -> bool {
        self.original.sig.asyncness.is_some()
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
    fn from_syn(original: ImplItemFn) -> Self {
        let (receiver, self_param) = Receiver::of(&original.sig.inputs);
        let params = typed_params(&original.sig.inputs);
        let returns = match &original.sig.output {
            ReturnType::Type(_, ty) if !is_unit(ty) => Some((**ty).clone()),
            _ => None,
        };
        Applier {
            original,
            receiver,
            self_param,
            params,
            returns,
            valid: true,
        }
    }

    pub(crate) fn ident(&self) -> &Ident {
        &self.original.sig.ident
    }

    /// The event the method applies: what its first parameter refers to.
    pub(crate) fn event(&self) -> Option<&Type> {
        let first = self.params.first()?;
        Some(match &*first.ty {
            Type::Reference(reference) => &reference.elem,
            ty => ty,
        })
    }
}

impl EventHandler {
    pub(crate) fn from_syn(original: ItemFn, attr: EventHandlerAttr) -> Self {
        EventHandler { original, attr }
    }

    pub(crate) fn params(&self) -> Vec<PatType> {
        typed_params(&self.original.sig.inputs)
    }

    /// The event the function handles: what its first parameter refers to.
    pub(crate) fn event(&self) -> Option<Type> {
        match self.params().first().map(|param| &*param.ty) {
            Some(Type::Reference(reference)) if reference.mutability.is_none() => {
                Some((*reference.elem).clone())
            }
            _ => None,
        }
    }

    /// The span of the envelope parameter's type, when there is one.
    pub(crate) fn envelope(&self) -> Option<Span> {
        self.params().get(1).map(|param| param.ty.span())
    }
}

impl ProcessorImpl {
    pub(crate) fn from_syn(mut original: ItemImpl, kind: ProcessorKind) -> Self {
        let mut handlers = Vec::new();
        for item in &mut original.items {
            let ImplItem::Fn(method) = item else {
                continue;
            };
            let Some(attr) = take_attr(&mut method.attrs, "event_handler") else {
                continue;
            };
            let attr_args = (!matches!(attr.meta, syn::Meta::Path(_))).then_some(attr);
            handlers.push(ProcessorHandler::from_syn(method.clone(), attr_args));
        }
        ProcessorImpl {
            original,
            kind,
            handlers,
        }
    }
}

impl ProcessorHandler {
    fn from_syn(original: ImplItemFn, attr_args: Option<Attribute>) -> Self {
        let (receiver, self_param) = Receiver::of(&original.sig.inputs);
        let mut params = Vec::new();
        let mut has_event = false;
        for typed in typed_params(&original.sig.inputs) {
            let kind = match &*typed.ty {
                Type::Reference(reference) if last_segment_is(&reference.elem, "Views") => {
                    ProcessorParamKind::Views {
                        mutable: reference.mutability.is_some(),
                    }
                }
                Type::Reference(reference)
                    if last_segment_is(&reference.elem, "ProcessContext") =>
                {
                    ProcessorParamKind::Context
                }
                Type::Reference(reference) if last_segment_is(&reference.elem, "Envelope") => {
                    ProcessorParamKind::Envelope
                }
                Type::Reference(reference) if reference.mutability.is_none() && !has_event => {
                    has_event = true;
                    ProcessorParamKind::Event
                }
                _ => ProcessorParamKind::Unexpected,
            };
            params.push(ProcessorParam {
                original: typed,
                kind,
            });
        }
        ProcessorHandler {
            original,
            attr_args,
            receiver,
            self_param,
            params,
        }
    }

    pub(crate) fn ident(&self) -> &Ident {
        &self.original.sig.ident
    }

    /// The event the handler takes: what its event parameter refers to.
    pub(crate) fn event(&self) -> Option<&Type> {
        self.params
            .iter()
            .find_map(|param| match (&param.kind, &*param.original.ty) {
                (ProcessorParamKind::Event, Type::Reference(reference)) => Some(&*reference.elem),
                _ => None,
            })
    }

    pub(crate) fn is_async(&self) -> bool {
        self.original.sig.asyncness.is_some()
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

fn typed_params(inputs: &syn::punctuated::Punctuated<FnArg, syn::Token![,]>) -> Vec<PatType> {
    inputs
        .iter()
        .filter_map(|input| match input {
            FnArg::Typed(typed) => Some(typed.clone()),
            FnArg::Receiver(_) => None,
        })
        .collect()
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

fn last_segment_is(ty: &Type, name: &str) -> bool {
    matches!(ty, Type::Path(path) if path.path.segments.last().is_some_and(|segment| segment.ident == name))
}

fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(tuple) if tuple.elems.is_empty())
}
