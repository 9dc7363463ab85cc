//! Attribute parsing. Unknown and repeated keys are errors; a mistake in one
//! key does not hide mistakes in the others.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{Attribute, Ident, LitInt, LitStr, Type};

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

/// `#[event(name = "..", version = N, upcast(1 = OldType, ..), tags(field, ..))]`
#[derive(Default)]
pub(crate) struct EventAttr {
    pub(crate) name: Option<LitStr>,
    pub(crate) version: Option<(u32, Span)>,
    pub(crate) upcasts: Vec<Upcast>,
    /// The fields of the wrapped struct the stores index as tags.
    pub(crate) tags: Vec<Ident>,
}

/// `1 = OldType` in `upcast(..)`: stored version 1 reads as `OldType` and
/// converts into the current type.
pub(crate) struct Upcast {
    pub(crate) version: u32,
    pub(crate) version_span: Span,
    pub(crate) ty: Type,
}

/// `#[deadline_type(name = "..", version = N)]` on a `#[derive(Deadline)]` type.
#[derive(Default)]
pub(crate) struct DeadlineTypeAttr {
    pub(crate) name: Option<LitStr>,
    pub(crate) version: Option<(u32, Span)>,
}

/// `#[command_handler]` or `#[command_handler(create)]`
#[derive(Default)]
pub(crate) struct CommandHandlerAttr {
    pub(crate) create: bool,
}

/// `#[decision(name = "..", command = C, event = E, error = Err)]` on a
/// `#[derive(DecisionModel)]` struct.
pub(crate) struct DecisionAttr {
    pub(crate) name: Option<LitStr>,
    pub(crate) command: Option<Type>,
    pub(crate) event: Option<Type>,
    pub(crate) error: Option<Type>,
}

/// The `#[decision(..)]` attribute, checked; `None` when it is missing or
/// given twice (reported).
pub(crate) fn decision(attrs: &[Attribute], errors: &mut Errors) -> Option<DecisionAttr> {
    let mut found: Option<DecisionAttr> = None;
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("decision")) {
        if found.is_some() {
            errors.spanned(
                attr,
                "duplicate #[decision(..)] attribute; merge the keys into one",
            );
            continue;
        }
        let mut parsed = DecisionAttr {
            name: None,
            command: None,
            event: None,
            error: None,
        };
        let result = attr.parse_nested_meta(|meta| {
            let slots = (
                &mut parsed.name,
                &mut parsed.command,
                &mut parsed.event,
                &mut parsed.error,
            );
            if !name_and_types(&meta, errors, slots)? {
                unknown_key(
                    errors,
                    &meta,
                    "#[decision(..)]",
                    "`name`, `command`, `event` or `error`",
                )?;
            }
            Ok(())
        });
        errors.ok(result);
        let missing: Vec<&str> = [
            ("name = \"..\"", parsed.name.is_none()),
            ("command = C", parsed.command.is_none()),
            ("event = E", parsed.event.is_none()),
            ("error = Err", parsed.error.is_none()),
        ]
        .into_iter()
        .filter(|(_, missing)| *missing)
        .map(|(key, _)| key)
        .collect();
        if !missing.is_empty() {
            errors.spanned(
                attr,
                format!("#[decision(..)] needs {}", missing.join(", ")),
            );
        }
        found = Some(parsed);
    }
    found
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
        // A bad value is reported and the key still counts as given, so the
        // other keys are checked and none is reported missing.
        let result = attr.parse_nested_meta(|meta| {
            let slots = (
                &mut parsed.name,
                &mut parsed.command,
                &mut parsed.event,
                &mut parsed.error,
            );
            if name_and_types(&meta, errors, slots)? {
                return Ok(());
            }
            match key_name(&meta).as_str() {
                "services" => {
                    let ty = type_value(&meta, "services", "MyServices", errors)?;
                    set(errors, &meta, &mut parsed.services, ty);
                }
                "snapshot_every" => {
                    let every = positive::<u64>(&meta, "snapshot_every", "100", errors)?;
                    set(errors, &meta, &mut parsed.snapshot_every, every);
                }
                "snapshot_version" => {
                    let version = positive::<u32>(&meta, "snapshot_version", "2", errors)?;
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
                "#[event(..)] needs `name = \"..\"`, `version = N`, `upcast(..)` or `tags(..)`; remove it to keep the defaults",
            );
            continue;
        }
        let result = attr.parse_nested_meta(|meta| {
            if name_or_version(&meta, errors, &mut parsed.name, &mut parsed.version)? {
                return Ok(());
            }
            match key_name(&meta).as_str() {
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
                "tags" => {
                    let content;
                    syn::parenthesized!(content in meta.input);
                    let fields = content.parse_terminated(<Ident as syn::parse::Parse>::parse, syn::Token![,])?;
                    if fields.is_empty() {
                        errors.spanned(
                            &meta.path,
                            "`tags(..)` needs the fields of the event that tag it, such as `tags(course_id)`",
                        );
                    }
                    for field in fields {
                        if parsed.tags.contains(&field) {
                            errors.spanned(&field, format!("tag `{field}` is named twice"));
                        } else {
                            parsed.tags.push(field);
                        }
                    }
                }
                _ => unknown_key(
                    errors,
                    &meta,
                    "#[event(..)]",
                    "`name`, `version`, `upcast` or `tags`",
                )?,
            }
            Ok(())
        });
        errors.ok(result);
    }
    parsed
}

/// Where `name`, `command`, `event` and `error` go.
type NameAndTypes<'a> = (
    &'a mut Option<LitStr>,
    &'a mut Option<Type>,
    &'a mut Option<Type>,
    &'a mut Option<Type>,
);

/// `name = ".."`, `command = C`, `event = E` or `error = Err`, the keys
/// `#[aggregate(..)]` and `#[decision(..)]` share; false for any other
/// key, left to the caller.
fn name_and_types(
    meta: &ParseNestedMeta,
    errors: &mut Errors,
    (name, command, event, error): NameAndTypes<'_>,
) -> syn::Result<bool> {
    match key_name(meta).as_str() {
        "name" => {
            let stored = stored_name(meta, errors)?;
            set(errors, meta, name, stored);
        }
        "command" => {
            let ty = type_value(meta, "command", "MyCommand", errors)?;
            set(errors, meta, command, ty);
        }
        "event" => {
            let ty = type_value(meta, "event", "MyEvent", errors)?;
            set(errors, meta, event, ty);
        }
        "error" => {
            let ty = type_value(meta, "error", "MyError", errors)?;
            set(errors, meta, error, ty);
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// `name = ".."` or `version = N`, the keys `#[event(..)]` and
/// `#[deadline_type(..)]` share; false for any other key, left to the caller.
fn name_or_version(
    meta: &ParseNestedMeta,
    errors: &mut Errors,
    name: &mut Option<LitStr>,
    version: &mut Option<(u32, Span)>,
) -> syn::Result<bool> {
    match key_name(meta).as_str() {
        "name" => {
            let stored = stored_name(meta, errors)?;
            set(errors, meta, name, stored);
        }
        "version" => {
            let literal = positive::<u32>(meta, "version", "2", errors)?;
            let number = literal.base10_parse::<u32>().unwrap_or(1);
            set(errors, meta, version, (number, literal.span()));
        }
        _ => return Ok(false),
    }
    Ok(true)
}

pub(crate) fn deadline_type(attrs: &[Attribute], errors: &mut Errors) -> DeadlineTypeAttr {
    let mut parsed = DeadlineTypeAttr::default();
    for attr in attrs
        .iter()
        .filter(|attr| attr.path().is_ident("deadline_type"))
    {
        if matches!(attr.meta, syn::Meta::Path(_)) || is_empty_list(attr) {
            errors.spanned(
                attr,
                "#[deadline_type(..)] needs `name = \"..\"` or `version = N`; remove it to keep the defaults",
            );
            continue;
        }
        let result = attr.parse_nested_meta(|meta| {
            if !name_or_version(&meta, errors, &mut parsed.name, &mut parsed.version)? {
                unknown_key(errors, &meta, "#[deadline_type(..)]", "`name` or `version`")?;
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
            no_value(&meta, "write #[command_handler(create)]", errors)?;
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

/// `#[event_handler]`, `#[event_handler(name = "..")]` or
/// `#[event_handler(inline)]` on a free function.
#[derive(Default)]
pub(crate) struct EventHandlerAttr {
    /// The checkpoint's name, kept forever (default: the function's path).
    pub(crate) name: Option<LitStr>,
    pub(crate) inline: bool,
}

pub(crate) fn event_handler(args: TokenStream, errors: &mut Errors) -> EventHandlerAttr {
    let mut parsed = EventHandlerAttr::default();
    let result = syn::meta::parser(|meta| {
        if meta.path.is_ident("inline") {
            if parsed.inline {
                errors.spanned(&meta.path, "duplicate `inline`");
            }
            no_value(&meta, "write #[event_handler(inline)]", errors)?;
            parsed.inline = true;
            Ok(())
        } else if meta.path.is_ident("name") {
            let name = stored_name(&meta, errors)?;
            set(errors, &meta, &mut parsed.name, name);
            Ok(())
        } else {
            unknown_key(errors, &meta, "#[event_handler(..)]", "`name` or `inline`")
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

/// A key that takes no value, such as `create`: a value is reported and
/// skipped.
fn no_value(meta: &ParseNestedMeta, fix: &str, errors: &mut Errors) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        let value: syn::Expr = meta.value()?.parse()?;
        errors.spanned(value, format!("`{}` takes no value: {fix}", key_name(meta)));
    }
    Ok(())
}

/// A stored name: a non-empty string literal. A bad one is reported and
/// kept, so the key does not also read as missing.
fn stored_name(meta: &ParseNestedMeta, errors: &mut Errors) -> syn::Result<LitStr> {
    let key = key_name(meta);
    let value: syn::Expr = meta.value()?.parse()?;
    let name = match value {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(name),
            ..
        }) => name,
        other => {
            errors.spanned(
                &other,
                format!("`{key}` takes a string, the name the log keeps: `{key} = \"..\"`"),
            );
            return Ok(LitStr::new("", other.span()));
        }
    };
    let text = name.value();
    if text.is_empty() || text.trim() != text {
        errors.spanned(
            &name,
            "a stored name must be non-empty, without leading or trailing spaces",
        );
    }
    Ok(name)
}

/// A type, such as `command = MyCommand`. What does not parse as a type is
/// reported and skipped up to the next key.
fn type_value(
    meta: &ParseNestedMeta,
    key: &str,
    example: &str,
    errors: &mut Errors,
) -> syn::Result<Type> {
    let input = meta.value()?;
    let fork = input.fork();
    if let Ok(ty) = fork.parse::<Type>()
        && (fork.is_empty() || fork.peek(syn::Token![,]))
    {
        input.parse::<Type>()?;
        return Ok(ty);
    }
    let mut skipped = TokenStream::new();
    while !input.is_empty() && !input.peek(syn::Token![,]) {
        skipped.extend([input.parse::<proc_macro2::TokenTree>()?]);
    }
    errors.spanned(
        &skipped,
        format!("`{key}` takes a type: `{key} = {example}`"),
    );
    Ok(syn::parse_quote!(::cqrs_core::__private::Unknown))
}

/// A whole number from 1 up, kept as a literal for its span. A bad value is
/// reported, and read as 1.
fn positive<T>(
    meta: &ParseNestedMeta,
    key: &str,
    example: &str,
    errors: &mut Errors,
) -> syn::Result<LitInt>
where
    T: std::str::FromStr + PartialOrd + From<u8>,
    T::Err: std::fmt::Display,
{
    let value: syn::Expr = meta.value()?.parse()?;
    let message = format!("`{key}` is a whole number from 1 up: `{key} = {example}`");
    match &value {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Int(literal),
            ..
        }) => {
            if !literal
                .base10_parse::<T>()
                .is_ok_and(|value| value >= T::from(1))
            {
                errors.spanned(literal, message);
                return Ok(LitInt::new("1", literal.span()));
            }
            Ok(literal.clone())
        }
        other => {
            errors.spanned(other, message);
            Ok(LitInt::new("1", other.span()))
        }
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

/// `#[projection(name = "..", version = N, segments = N)]` and
/// `#[process_manager(name = "..", segments = N)]`.
pub(crate) struct ProcessorArgs {
    /// The name that keys its segments, kept forever.
    pub(crate) name: Option<LitStr>,
    /// A projection's version.
    pub(crate) version: Option<LitInt>,
    /// How many segments instances share.
    pub(crate) segments: Option<LitInt>,
    /// A table projection's tables, by serving name: `tables(a, b)`.
    pub(crate) tables: Option<Tables>,
    /// A table projection's migrations: `migrations(sqlite(".."), postgres(".."))`.
    pub(crate) migrations: Option<Migrations>,
}

/// `tables(revenue_by_sku_day, ..)`.
pub(crate) struct Tables {
    pub(crate) key: syn::Path,
    pub(crate) names: Vec<syn::Ident>,
}

/// `migrations(sqlite("a.sql", ..), postgres("b.sql", ..))`: per dialect,
/// the steps' files, from the crate's root.
pub(crate) struct Migrations {
    pub(crate) key: syn::Path,
    pub(crate) sqlite: Vec<LitStr>,
    pub(crate) postgres: Vec<LitStr>,
}

pub(crate) fn processor_args(
    args: TokenStream,
    macro_name: &str,
    versioned: bool,
    errors: &mut Errors,
) -> ProcessorArgs {
    let mut parsed = ProcessorArgs {
        name: None,
        version: None,
        segments: None,
        tables: None,
        migrations: None,
    };
    // A process manager's commands cannot be unsent: it is never rebuilt,
    // so it has no versions to build beside each other.
    let expected = if versioned {
        "`name`, `version`, `segments`, `tables` or `migrations`"
    } else {
        "`name` or `segments` (a process manager has no `version`: it is never rebuilt)"
    };
    let result = syn::meta::parser(|meta| {
        match key_name(&meta).as_str() {
            "name" => {
                let value = stored_name(&meta, errors)?;
                set(errors, &meta, &mut parsed.name, value);
            }
            "version" if versioned => {
                let value = positive::<u32>(&meta, "version", "2", errors)?;
                set(errors, &meta, &mut parsed.version, value);
            }
            "segments" => {
                let value = positive::<u32>(&meta, "segments", "16", errors)?;
                set(errors, &meta, &mut parsed.segments, value);
            }
            "tables" if versioned => {
                let value = tables(&meta, errors)?;
                set(errors, &meta, &mut parsed.tables, value);
            }
            "migrations" if versioned => {
                let value = migrations(&meta, errors)?;
                set(errors, &meta, &mut parsed.migrations, value);
            }
            _ => return unknown_key(errors, &meta, &format!("#[{macro_name}(..)]"), expected),
        }
        Ok(())
    })
    .parse2(args);
    errors.ok(result);
    if parsed.name.is_none() {
        errors.push(syn::Error::new(
            Span::call_site(),
            format!("#[{macro_name}(..)] is missing `name = \"..\"`, which keys its checkpoint; it is kept forever"),
        ));
    }
    parsed
}

/// `tables(a, b)`: each a table name of lowercase letters, digits and
/// `_`, which SQL reads as written in both dialects.
fn tables(meta: &ParseNestedMeta, errors: &mut Errors) -> syn::Result<Tables> {
    const SHAPE: &str = "`tables(..)` lists the tables the projection owns by the names queries read: `tables(revenue_by_sku_day)`";
    let mut names = Vec::new();
    let mut listed = false;
    meta.parse_nested_meta(|table| {
        listed = true;
        match table.path.get_ident() {
            Some(name) if plain_table(&name.to_string()) => names.push(name.clone()),
            Some(name) => errors.spanned(
                name,
                format!("`{name}` is not a table name SQL reads as written: use lowercase letters, digits and `_`, at most 55 characters"),
            ),
            None => errors.spanned(&table.path, SHAPE),
        }
        Ok(())
    })?;
    if !listed {
        errors.spanned(&meta.path, SHAPE);
    }
    Ok(Tables {
        key: meta.path.clone(),
        names,
    })
}

/// Whether a table name is one SQL reads as written, with room for the
/// version's `_vN` within PostgreSQL's 63 bytes.
fn plain_table(name: &str) -> bool {
    name.len() <= 55
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `migrations(sqlite("a.sql"), postgres("b.sql", "c.sql"))`.
fn migrations(meta: &ParseNestedMeta, errors: &mut Errors) -> syn::Result<Migrations> {
    const SHAPE: &str = "`migrations(..)` lists, per database, the files of its steps from the crate's root: `migrations(sqlite(\"sql/revenue.sqlite.sql\"), postgres(\"sql/revenue.postgres.sql\"))`";
    let mut parsed = Migrations {
        key: meta.path.clone(),
        sqlite: Vec::new(),
        postgres: Vec::new(),
    };
    meta.parse_nested_meta(|dialect| {
        let steps = match key_name(&dialect).as_str() {
            "sqlite" => &mut parsed.sqlite,
            "postgres" => &mut parsed.postgres,
            _ => {
                return unknown_key(
                    errors,
                    &dialect,
                    "`migrations(..)`",
                    "`sqlite` or `postgres`",
                );
            }
        };
        if !steps.is_empty() {
            errors.spanned(&dialect.path, format!("duplicate `{}`", key_name(&dialect)));
        }
        let content;
        syn::parenthesized!(content in dialect.input);
        let files = content.parse_terminated(|input| input.parse::<LitStr>(), syn::Token![,]);
        match files {
            Ok(files) if !files.is_empty() => steps.extend(files),
            Ok(_) => errors.spanned(&dialect.path, SHAPE),
            Err(error) => errors.push(syn::Error::new(error.span(), SHAPE)),
        }
        Ok(())
    })?;
    if parsed.sqlite.is_empty() && parsed.postgres.is_empty() {
        errors.spanned(&meta.path, SHAPE);
    }
    Ok(parsed)
}

/// The indexes of an indexed view type, `#[indexes((customer, placed_at),
/// placed_at)]`: each a parenthesized list of fields in order, or one
/// field. (One attribute, not one per index: clippy's
/// `duplicated_attributes` would flag a field named by two.)
pub(crate) fn indexes(attrs: &[Attribute], errors: &mut Errors) -> Vec<Vec<syn::Ident>> {
    const SHAPE: &str = "#[indexes(..)] lists the indexes, each its fields in order: `#[indexes((customer, placed_at), placed_at)]`";
    let mut indexes = Vec::new();
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("indexes")) {
        let parsed = attr.parse_args_with(
            syn::punctuated::Punctuated::<IndexFields, syn::Token![,]>::parse_terminated,
        );
        match parsed {
            Ok(list) if !list.is_empty() => {
                indexes.extend(list.into_iter().map(|fields| fields.0));
            }
            Ok(_) => errors.spanned(attr, SHAPE),
            Err(error) => errors.push(syn::Error::new(error.span(), format!("{error}: {SHAPE}"))),
        }
    }
    indexes
}

/// One index in `#[indexes(..)]`: `(a, b)` or `a`.
struct IndexFields(Vec<syn::Ident>);

impl syn::parse::Parse for IndexFields {
    fn parse(input: syn::parse::ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(syn::token::Paren) {
            let content;
            syn::parenthesized!(content in input);
            let fields =
                syn::punctuated::Punctuated::<syn::Ident, syn::Token![,]>::parse_terminated(
                    &content,
                )?;
            if fields.is_empty() {
                return Err(content.error("an index names at least one field"));
            }
            Ok(Self(fields.into_iter().collect()))
        } else {
            Ok(Self(vec![input.parse()?]))
        }
    }
}
