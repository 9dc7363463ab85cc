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

use crate::attr::{
    self, AggregateAttr, CommandHandlerAttr, DeadlineTypeAttr, DecisionAttr, EventAttr,
    EventHandlerAttr,
};
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

/// A struct with `#[derive(DecisionModel)]`.
pub(crate) struct DecisionStruct<'a> {
    pub(crate) original: &'a DeriveInput,
    pub(crate) attr: Option<DecisionAttr>,
    /// Its `#[tag]` fields, in order.
    pub(crate) tags: Vec<&'a syn::Field>,
}

/// A type with `#[derive(Deadline)]`.
pub(crate) struct DeadlineType<'a> {
    pub(crate) original: &'a DeriveInput,
    pub(crate) attr: DeadlineTypeAttr,
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

/// A view type with `#[derive(Indexed)]`.
pub(crate) struct IndexedType<'a> {
    pub(crate) original: &'a DeriveInput,
    /// Each index of `#[indexes(..)]`, its fields in order.
    pub(crate) indexes: Vec<Vec<Ident>>,
}

impl<'a> IndexedType<'a> {
    pub(crate) fn from_syn(input: &'a DeriveInput, errors: &mut Errors) -> Self {
        IndexedType {
            original: input,
            indexes: attr::indexes(&input.attrs, errors),
        }
    }

    /// The struct's named fields.
    pub(crate) fn fields(&self) -> Vec<&syn::Field> {
        match &self.original.data {
            syn::Data::Struct(data) => data
                .fields
                .iter()
                .filter(|field| field.ident.is_some())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Every field the indexes name, each once, in the order first named.
    pub(crate) fn declared(&self) -> Vec<&Ident> {
        let mut declared: Vec<&Ident> = Vec::new();
        for field in self.indexes.iter().flatten() {
            if !declared.contains(&field) {
                declared.push(field);
            }
        }
        declared
    }
}

/// An `#[aggregate_impl]` block.
pub(crate) struct AggregateImpl {
    pub(crate) original: ItemImpl,
    pub(crate) command_handlers: Vec<Handler>,
    pub(crate) deadline_handlers: Vec<Handler>,
    pub(crate) appliers: Vec<Applier>,
    /// A method marked with two of `#[command_handler]`, `#[deadline]` and
    /// `#[apply]`, with the two attributes.
    pub(crate) marked_twice: Vec<(Ident, &'static str, &'static str)>,
    /// A broken `#[command_handler]` whose command type cannot be told: every
    /// command gets a placeholder handler, so none is reported as unhandled.
    /// Set by validation.
    pub(crate) lost_command: bool,
    /// The same for a broken `#[deadline]` handler.
    pub(crate) lost_deadline: bool,
    /// The same for a broken `#[apply]`.
    pub(crate) lost_event: bool,
}

/// What a deciding method of an aggregate decides on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandlerKind {
    /// `#[command_handler]`: a command sent to the aggregate.
    Command,
    /// `#[deadline]`: a deadline the aggregate scheduled, now due.
    Deadline,
}

impl HandlerKind {
    /// The attribute as the user writes it.
    pub(crate) fn attribute(self) -> &'static str {
        match self {
            HandlerKind::Command => "command_handler",
            HandlerKind::Deadline => "deadline",
        }
    }

    /// What the method is called in messages.
    pub(crate) fn handler(self) -> &'static str {
        match self {
            HandlerKind::Command => "command handler",
            HandlerKind::Deadline => "deadline handler",
        }
    }

    /// What the method takes by value.
    pub(crate) fn input(self) -> &'static str {
        match self {
            HandlerKind::Command => "command",
            HandlerKind::Deadline => "deadline",
        }
    }

    /// The context type it may take.
    pub(crate) fn context(self) -> &'static str {
        match self {
            HandlerKind::Command => "CommandContext",
            HandlerKind::Deadline => "DeadlineContext",
        }
    }
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

/// A `#[command_handler]` or `#[deadline]` method: both decide against
/// the state, on a command or on a due deadline.
pub(crate) struct Handler {
    pub(crate) original: ImplItemFn,
    pub(crate) kind: HandlerKind,
    /// `create`, for a command handler.
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

/// One parameter of a handler, as classified by its type.
pub(crate) struct Param {
    pub(crate) original: PatType,
    pub(crate) kind: ParamKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParamKind {
    /// Taken by value: the command or deadline (only the first is).
    Input,
    /// `&CommandContext` or `&DeadlineContext`, the handler's own.
    Context,
    /// Any other shared reference: the aggregate's services.
    Services,
    /// A `&mut` reference.
    Unexpected,
}

/// Where rustc should point when the return type does not fit, and the
/// deadlines it schedules and cancels.
pub(crate) struct Output {
    /// The whole return type.
    pub(crate) span: Span,
    /// `R` in `Result<R, E>`, when written that way.
    pub(crate) events: Span,
    /// `E` in `Result<R, E>`, when written that way.
    pub(crate) error: Span,
    /// Each `Schedule<T>` written in `R`.
    pub(crate) scheduled: Vec<DeadlineUse>,
    /// Each `Cancel<T>` written in `R`.
    pub(crate) cancelled: Vec<DeadlineUse>,
}

/// A `Schedule<T>` or `Cancel<T>` in a handler's return type.
pub(crate) struct DeadlineUse {
    /// `T`.
    pub(crate) deadline: Type,
    /// The whole `Schedule<T>` or `Cancel<T>`.
    pub(crate) span: Span,
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
    /// `#[deadline]` methods, which only a process manager may have.
    pub(crate) deadline_handlers: Vec<ProcessDeadline>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProcessorKind {
    Projection,
    /// A projection with `tables(..)`: its handlers write SQL tables.
    TableProjection,
    ProcessManager,
}

impl ProcessorKind {
    pub(crate) fn attribute(self) -> &'static str {
        match self {
            ProcessorKind::Projection | ProcessorKind::TableProjection => "projection",
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
    /// The deadlines a process manager's handler schedules and cancels.
    pub(crate) output: Option<Output>,
}

/// A `#[deadline]` method of a process manager.
pub(crate) struct ProcessDeadline {
    pub(crate) original: ImplItemFn,
    /// `#[deadline(..)]` with arguments, which it does not take.
    pub(crate) attr_args: Option<Attribute>,
    pub(crate) receiver: Receiver,
    pub(crate) self_param: Option<syn::Receiver>,
    pub(crate) params: Vec<ProcessDeadlineParam>,
    pub(crate) output: Option<Output>,
}

/// One parameter of a process manager's `#[deadline]` method.
pub(crate) struct ProcessDeadlineParam {
    pub(crate) original: PatType,
    pub(crate) kind: ProcessDeadlineParamKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProcessDeadlineParamKind {
    /// Taken by value: the deadline (only the first is).
    Deadline,
    /// `&ProcessContext`.
    Context,
    /// `&DeadlineContext`.
    DeadlineContext,
    /// Anything else.
    Unexpected,
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
    /// `&mut Tables` (or `&Tables`, which validation refuses).
    Tables { mutable: bool },
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

impl<'a> DecisionStruct<'a> {
    pub(crate) fn from_syn(input: &'a DeriveInput, errors: &mut Errors) -> Self {
        let mut tags = Vec::new();
        match &input.data {
            syn::Data::Struct(data) if matches!(data.fields, syn::Fields::Named(_)) => {
                for field in &data.fields {
                    let marks: Vec<&Attribute> = field
                        .attrs
                        .iter()
                        .filter(|attr| attr.path().is_ident("tag"))
                        .collect();
                    if let Some(mark) = marks.first() {
                        attr::no_args(mark, errors);
                        tags.push(field);
                    }
                }
            }
            _ => errors.spanned(
                &input.ident,
                "#[derive(DecisionModel)] goes on a struct with named fields: its #[tag] fields name the boundary, the others hold the state",
            ),
        }
        let attr = attr::decision(&input.attrs, errors);
        DecisionStruct {
            original: input,
            attr,
            tags,
        }
    }
}

impl<'a> DeadlineType<'a> {
    pub(crate) fn from_syn(input: &'a DeriveInput, errors: &mut Errors) -> Self {
        DeadlineType {
            original: input,
            attr: attr::deadline_type(&input.attrs, errors),
        }
    }

    /// The name pending deadlines are stored under: `#[deadline_type(name =
    /// ..)]`, else the type's name.
    pub(crate) fn stored_name(&self) -> String {
        match &self.attr.name {
            Some(name) => name.value(),
            None => self.original.ident.to_string(),
        }
    }

    pub(crate) fn version(&self) -> u32 {
        self.attr.version.map_or(1, |(version, _)| version)
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
        let mut deadline_handlers = Vec::new();
        let mut appliers = Vec::new();
        let mut marked_twice = Vec::new();
        for item in &mut original.items {
            let ImplItem::Fn(method) = item else {
                continue;
            };
            let marks = [
                (
                    "command_handler",
                    take_attr(&mut method.attrs, "command_handler"),
                ),
                ("deadline", take_attr(&mut method.attrs, "deadline")),
                ("apply", take_attr(&mut method.attrs, "apply")),
            ];
            let mut present = marks.iter().filter(|(_, attr)| attr.is_some());
            let (Some((first, Some(attr))), second) = (present.next(), present.next()) else {
                continue;
            };
            if let Some((second, _)) = second {
                marked_twice.push((method.sig.ident.clone(), *first, *second));
                continue;
            }
            match *first {
                "command_handler" => {
                    let args = match &attr.meta {
                        syn::Meta::List(list) => list.tokens.clone(),
                        syn::Meta::NameValue(_) => {
                            errors.spanned(
                                attr,
                                "write #[command_handler] or #[command_handler(create)]",
                            );
                            proc_macro2::TokenStream::new()
                        }
                        syn::Meta::Path(_) => proc_macro2::TokenStream::new(),
                    };
                    let attr = attr::command_handler(args, errors);
                    command_handlers.push(Handler::from_syn(
                        method.clone(),
                        HandlerKind::Command,
                        attr,
                    ));
                }
                "deadline" => {
                    attr::no_args(attr, errors);
                    deadline_handlers.push(Handler::from_syn(
                        method.clone(),
                        HandlerKind::Deadline,
                        CommandHandlerAttr::default(),
                    ));
                }
                _ => {
                    attr::no_args(attr, errors);
                    appliers.push(Applier::from_syn(method.clone()));
                }
            }
        }
        AggregateImpl {
            original,
            command_handlers,
            deadline_handlers,
            appliers,
            marked_twice,
            lost_command: false,
            lost_deadline: false,
            lost_event: false,
        }
    }

    /// Every `Schedule<T>` the handlers' return types write.
    pub(crate) fn scheduled(&self) -> impl Iterator<Item = &DeadlineUse> {
        self.handlers()
            .filter_map(|handler| handler.output.as_ref())
            .flat_map(|output| &output.scheduled)
    }

    /// Every `Cancel<T>` the handlers' return types write.
    pub(crate) fn cancelled(&self) -> impl Iterator<Item = &DeadlineUse> {
        self.handlers()
            .filter_map(|handler| handler.output.as_ref())
            .flat_map(|output| &output.cancelled)
    }

    fn handlers(&self) -> impl Iterator<Item = &Handler> {
        self.command_handlers.iter().chain(&self.deadline_handlers)
    }
}

impl Handler {
    fn from_syn(original: ImplItemFn, kind: HandlerKind, attr: CommandHandlerAttr) -> Self {
        let (receiver, self_param) = Receiver::of(&original.sig.inputs);
        let mut params = Vec::new();
        let mut has_input = false;
        for input in &original.sig.inputs {
            let FnArg::Typed(typed) = input else { continue };
            let param = match &*typed.ty {
                Type::Reference(reference) if reference.mutability.is_some() => {
                    ParamKind::Unexpected
                }
                Type::Reference(reference) if last_segment_is(&reference.elem, kind.context()) => {
                    ParamKind::Context
                }
                // The other kind's context is a mistake, not a service.
                Type::Reference(reference)
                    if last_segment_is(&reference.elem, "CommandContext")
                        || last_segment_is(&reference.elem, "DeadlineContext") =>
                {
                    ParamKind::Unexpected
                }
                Type::Reference(_) => ParamKind::Services,
                _ if !has_input => {
                    has_input = true;
                    ParamKind::Input
                }
                _ => ParamKind::Unexpected,
            };
            params.push(Param {
                original: typed.clone(),
                kind: param,
            });
        }
        let output = match &original.sig.output {
            ReturnType::Type(_, ty) => Some(Output::of(ty)),
            ReturnType::Default => None,
        };
        Handler {
            original,
            kind,
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

    /// The command or deadline the handler takes, its first by-value
    /// parameter.
    pub(crate) fn input(&self) -> Option<&Type> {
        self.params
            .iter()
            .find(|param| param.kind == ParamKind::Input)
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
                let mut output = Output {
                    span,
                    events: types[0].span(),
                    error: types[1].span(),
                    scheduled: Vec::new(),
                    cancelled: Vec::new(),
                };
                output.find_deadlines(types[0]);
                return output;
            }
        }
        // Not a `Result`: a process manager's handler may return its
        // deadlines bare.
        let mut output = Output {
            span,
            events: span,
            error: span,
            scheduled: Vec::new(),
            cancelled: Vec::new(),
        };
        output.find_deadlines(ty);
        output
    }

    /// Collects the `Schedule<T>` and `Cancel<T>` written in `ty`, through
    /// tuples, arrays, `Option` and `Vec`, the shapes a decision takes.
    fn find_deadlines(&mut self, ty: &Type) {
        match ty {
            Type::Tuple(tuple) => {
                for element in &tuple.elems {
                    self.find_deadlines(element);
                }
            }
            Type::Array(array) => self.find_deadlines(&array.elem),
            Type::Paren(paren) => self.find_deadlines(&paren.elem),
            Type::Group(group) => self.find_deadlines(&group.elem),
            Type::Path(path) if path.qself.is_none() => {
                let Some(segment) = path.path.segments.last() else {
                    return;
                };
                let PathArguments::AngleBracketed(args) = &segment.arguments else {
                    return;
                };
                let [GenericArgument::Type(inner)] = args.args.iter().collect::<Vec<_>>()[..]
                else {
                    return;
                };
                let found = DeadlineUse {
                    deadline: inner.clone(),
                    span: ty.span(),
                };
                match segment.ident.to_string().as_str() {
                    "Schedule" => self.scheduled.push(found),
                    "Cancel" => self.cancelled.push(found),
                    "Option" | "Vec" => self.find_deadlines(inner),
                    _ => {}
                }
            }
            _ => {}
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
        let mut deadline_handlers = Vec::new();
        for item in &mut original.items {
            let ImplItem::Fn(method) = item else {
                continue;
            };
            if let Some(attr) = take_attr(&mut method.attrs, "event_handler") {
                let attr_args = (!matches!(attr.meta, syn::Meta::Path(_))).then_some(attr);
                handlers.push(ProcessorHandler::from_syn(method.clone(), attr_args));
            } else if let Some(attr) = take_attr(&mut method.attrs, "deadline") {
                let attr_args = (!matches!(attr.meta, syn::Meta::Path(_))).then_some(attr);
                deadline_handlers.push(ProcessDeadline::from_syn(method.clone(), attr_args));
            }
        }
        ProcessorImpl {
            original,
            kind,
            handlers,
            deadline_handlers,
        }
    }

    /// Every `Schedule<T>` the handlers' return types write.
    pub(crate) fn scheduled(&self) -> impl Iterator<Item = &DeadlineUse> {
        self.outputs().flat_map(|output| &output.scheduled)
    }

    /// Every `Cancel<T>` the handlers' return types write.
    pub(crate) fn cancelled(&self) -> impl Iterator<Item = &DeadlineUse> {
        self.outputs().flat_map(|output| &output.cancelled)
    }

    fn outputs(&self) -> impl Iterator<Item = &Output> {
        self.handlers
            .iter()
            .filter_map(|handler| handler.output.as_ref())
            .chain(
                self.deadline_handlers
                    .iter()
                    .filter_map(|handler| handler.output.as_ref()),
            )
    }
}

impl ProcessDeadline {
    fn from_syn(original: ImplItemFn, attr_args: Option<Attribute>) -> Self {
        let (receiver, self_param) = Receiver::of(&original.sig.inputs);
        let mut params = Vec::new();
        let mut has_deadline = false;
        for typed in typed_params(&original.sig.inputs) {
            let kind = match &*typed.ty {
                Type::Reference(reference)
                    if reference.mutability.is_none()
                        && last_segment_is(&reference.elem, "ProcessContext") =>
                {
                    ProcessDeadlineParamKind::Context
                }
                Type::Reference(reference)
                    if reference.mutability.is_none()
                        && last_segment_is(&reference.elem, "DeadlineContext") =>
                {
                    ProcessDeadlineParamKind::DeadlineContext
                }
                Type::Reference(_) => ProcessDeadlineParamKind::Unexpected,
                _ if !has_deadline => {
                    has_deadline = true;
                    ProcessDeadlineParamKind::Deadline
                }
                _ => ProcessDeadlineParamKind::Unexpected,
            };
            params.push(ProcessDeadlineParam {
                original: typed,
                kind,
            });
        }
        let output = match &original.sig.output {
            ReturnType::Type(_, ty) => Some(Output::of(ty)),
            ReturnType::Default => None,
        };
        ProcessDeadline {
            original,
            attr_args,
            receiver,
            self_param,
            params,
            output,
        }
    }

    pub(crate) fn ident(&self) -> &Ident {
        &self.original.sig.ident
    }

    /// The deadline type the handler takes, its by-value parameter.
    pub(crate) fn deadline(&self) -> Option<&Type> {
        self.params
            .iter()
            .find(|param| param.kind == ProcessDeadlineParamKind::Deadline)
            .map(|param| &*param.original.ty)
    }

    pub(crate) fn is_async(&self) -> bool {
        self.original.sig.asyncness.is_some()
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
                Type::Reference(reference) if last_segment_is(&reference.elem, "Tables") => {
                    ProcessorParamKind::Tables {
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
        let output = match &original.sig.output {
            ReturnType::Type(_, ty) => Some(Output::of(ty)),
            ReturnType::Default => None,
        };
        ProcessorHandler {
            original,
            attr_args,
            receiver,
            self_param,
            params,
            output,
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
