//! Attribute parsing. Unknown and repeated keys are errors; a mistake in one
//! key does not hide mistakes in the others.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::{Attribute, LitInt, LitStr, Type};

use crate::errors::Errors;

/// `#[aggregate(name = "..", command = .., event = .., error = .., services = ..)]`
pub(crate) struct AggregateAttr<'a> {
    pub(crate) original: &'a Attribute,
    pub(crate) name: Option<LitStr>,
    pub(crate) command: Option<Type>,
    pub(crate) event: Option<Type>,
    pub(crate) error: Option<Type>,
    pub(crate) services: Option<Type>,
    pub(crate) snapshot_every: Option<LitInt>,
    pub(crate) snapshot_version: Option<LitInt>,
}

/// `#[event(name = "..", version = N, upcast(1 = OldType, ..))]`
#[derive(Default)]
pub(crate) struct EventAttr {
    pub(crate) name: Option<LitStr>,
    pub(crate) version: Option<(u32, Span)>,
    pub(crate) upcasts: Vec<Upcast>,
}

/// `1 = OldType` in `upcast(..)`: stored version 1 reads as `OldType` and
/// converts into the current type.
pub(crate) struct Upcast {
    pub(crate) version: u32,
    pub(crate) version_span: Span,
    pub(crate) ty: Type,
}

/// `#[command_handler]` or `#[command_handler(create)]`
#[derive(Default)]
pub(crate) struct CommandHandlerAttr {
    pub(crate) create: bool,
}

const AGGREGATE_KEYS: &str =
    "`name`, `command`, `event`, `error`, `services`, `snapshot_every` or `snapshot_version`";

pub(crate) fn aggregate<'a>(
    attrs: &'a [Attribute],
    errors: &mut Errors,
) -> Option<AggregateAttr<'a>> {
    let mut found: Option<AggregateAttr<'a>> = None;
    for attr in attrs
        .iter()
        .filter(|attr| attr.path().is_ident("aggregate"))
    {
        if found.is_some() {
            errors.spanned(
                attr,
                "duplicate #[aggregate(..)] attribute; merge the keys into one",
            );
            continue;
        }
        let mut parsed = AggregateAttr {
            original: attr,
            name: None,
            command: None,
            event: None,
            error: None,
            services: None,
            snapshot_every: None,
            snapshot_version: None,
        };
        let result = attr.parse_nested_meta(|meta| {
            let key = key_name(&meta);
            match key.as_str() {
                "name" => set(errors, &meta, &mut parsed.name, stored_name(&meta)?),
                "command" => set(errors, &meta, &mut parsed.command, meta.value()?.parse()?),
                "event" => set(errors, &meta, &mut parsed.event, meta.value()?.parse()?),
                "error" => set(errors, &meta, &mut parsed.error, meta.value()?.parse()?),
                "services" => set(errors, &meta, &mut parsed.services, meta.value()?.parse()?),
                "snapshot_every" => {
                    let every = positive::<u64>(&meta, "snapshot_every")?;
                    set(errors, &meta, &mut parsed.snapshot_every, every);
                }
                "snapshot_version" => {
                    let version = positive::<u32>(&meta, "snapshot_version")?;
                    set(errors, &meta, &mut parsed.snapshot_version, version);
                }
                _ => unknown_key(errors, &meta, "#[aggregate(..)]", AGGREGATE_KEYS)?,
            }
            Ok(())
        });
        errors.ok(result);
        found = Some(parsed);
    }
    found
}

pub(crate) fn event(attrs: &[Attribute], errors: &mut Errors) -> EventAttr {
    let mut parsed = EventAttr::default();
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("event")) {
        if matches!(attr.meta, syn::Meta::Path(_)) || is_empty_list(attr) {
            errors.spanned(
                attr,
                "#[event(..)] needs `name = \"..\"`, `version = N` or `upcast(..)`; remove it to keep the defaults",
            );
            continue;
        }
        let result = attr.parse_nested_meta(|meta| {
            match key_name(&meta).as_str() {
                "name" => set(errors, &meta, &mut parsed.name, stored_name(&meta)?),
                "version" => {
                    let version = version(&meta)?;
                    set(errors, &meta, &mut parsed.version, version);
                }
                "upcast" => {
                    let content;
                    syn::parenthesized!(content in meta.input);
                    let entries = content
                        .parse_terminated(<Upcast as syn::parse::Parse>::parse, syn::Token![,])?;
                    if entries.is_empty() {
                        errors.spanned(
                            &meta.path,
                            "`upcast(..)` needs at least one `version = OldType`",
                        );
                    }
                    parsed.upcasts.extend(entries);
                }
                _ => unknown_key(
                    errors,
                    &meta,
                    "#[event(..)]",
                    "`name`, `version` or `upcast`",
                )?,
            }
            Ok(())
        });
        errors.ok(result);
    }
    parsed
}

pub(crate) fn command_handler(args: TokenStream, errors: &mut Errors) -> CommandHandlerAttr {
    let mut parsed = CommandHandlerAttr::default();
    let result = syn::meta::parser(|meta| {
        if meta.path.is_ident("create") {
            if parsed.create {
                errors.spanned(&meta.path, "duplicate `create`");
            }
            parsed.create = true;
            Ok(())
        } else {
            unknown_key(errors, &meta, "#[command_handler(..)]", "`create`")
        }
    })
    .parse2(args);
    errors.ok(result);
    parsed
}

/// Arguments of an attribute that takes none, such as `#[apply]`.
pub(crate) fn no_args(attr: &Attribute, errors: &mut Errors) {
    if !matches!(attr.meta, syn::Meta::Path(_)) {
        let name = attr.path().to_token_stream().to_string().replace(' ', "");
        errors.spanned(&attr.meta, format!("#[{name}] takes no arguments"));
    }
}

/// The arguments of an attribute macro that takes none.
pub(crate) fn no_macro_args(args: TokenStream, name: &str, errors: &mut Errors) {
    if !args.is_empty() {
        errors.spanned(args, format!("#[{name}] takes no arguments"));
    }
}

fn key_name(meta: &ParseNestedMeta) -> String {
    meta.path.to_token_stream().to_string().replace(' ', "")
}

fn set<T>(errors: &mut Errors, meta: &ParseNestedMeta, slot: &mut Option<T>, value: T) {
    if slot.is_some() {
        errors.spanned(&meta.path, format!("duplicate `{}`", key_name(meta)));
    } else {
        *slot = Some(value);
    }
}

/// Records the unknown key and skips its value, so later keys are still checked.
fn unknown_key(
    errors: &mut Errors,
    meta: &ParseNestedMeta,
    attribute: &str,
    expected: &str,
) -> syn::Result<()> {
    errors.spanned(
        &meta.path,
        format!(
            "unknown key `{}` in {attribute}; expected {expected}",
            key_name(meta)
        ),
    );
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.input.parse::<proc_macro2::Group>()?;
    }
    Ok(())
}

fn stored_name(meta: &ParseNestedMeta) -> syn::Result<LitStr> {
    let name: LitStr = meta.value()?.parse()?;
    let value = name.value();
    if value.is_empty() || value.trim() != value {
        return Err(syn::Error::new(
            name.span(),
            "a stored name must be non-empty, without leading or trailing spaces",
        ));
    }
    Ok(name)
}

fn version(meta: &ParseNestedMeta) -> syn::Result<(u32, Span)> {
    let literal: LitInt = meta.value()?.parse()?;
    match literal.base10_parse::<u32>() {
        Ok(version) if version >= 1 => Ok((version, literal.span())),
        _ => Err(syn::Error::new(
            literal.span(),
            "an event version is a whole number from 1 up",
        )),
    }
}

/// A whole number from 1 up, kept as a literal for its span.
fn positive<T>(meta: &ParseNestedMeta, key: &str) -> syn::Result<LitInt>
where
    T: std::str::FromStr + PartialOrd + From<u8>,
    T::Err: std::fmt::Display,
{
    let literal: LitInt = meta.value()?.parse()?;
    match literal.base10_parse::<T>() {
        Ok(value) if value >= T::from(1) => Ok(literal),
        _ => Err(syn::Error::new(
            literal.span(),
            format!("`{key}` is a whole number from 1 up"),
        )),
    }
}

impl syn::parse::Parse for Upcast {
    fn parse(input: syn::parse::ParseStream) -> syn::Result<Self> {
        let literal: LitInt = input.parse()?;
        let version = literal.base10_parse::<u32>().map_err(|_| {
            syn::Error::new(
                literal.span(),
                "write `upcast(1 = OldType)`: a stored version, then the type it reads as",
            )
        })?;
        input.parse::<syn::Token![=]>()?;
        Ok(Upcast {
            version,
            version_span: literal.span(),
            ty: input.parse()?,
        })
    }
}

fn is_empty_list(attr: &Attribute) -> bool {
    matches!(&attr.meta, syn::Meta::List(list) if list.tokens.is_empty())
}

/// The `name = ".."` of `#[projection(..)]` and `#[process_manager(..)]`.
pub(crate) fn processor_name(
    args: TokenStream,
    macro_name: &str,
    errors: &mut Errors,
) -> Option<LitStr> {
    let mut name = None;
    let result = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            let value = stored_name(&meta)?;
            set(errors, &meta, &mut name, value);
            Ok(())
        } else {
            unknown_key(errors, &meta, &format!("#[{macro_name}(..)]"), "`name`")
        }
    })
    .parse2(args);
    errors.ok(result);
    if name.is_none() {
        errors.push(syn::Error::new(
            Span::call_site(),
            format!("#[{macro_name}(..)] is missing `name = \"..\"`, which keys its checkpoint; it is kept forever"),
        ));
    }
    name
}
