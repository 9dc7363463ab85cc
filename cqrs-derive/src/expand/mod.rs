//! Code generation, one file per macro. Input here is already validated.

pub(crate) mod aggregate;
pub(crate) mod aggregate_impl;
pub(crate) mod command;
pub(crate) mod deadline;
pub(crate) mod decision;
pub(crate) mod decision_impl;
pub(crate) mod domain;
pub(crate) mod event;
pub(crate) mod event_handler;
pub(crate) mod indexed;
pub(crate) mod processor;

use std::collections::HashSet;

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};

use crate::ast::DeadlineUse;

/// The check functions and marker traits of one kind of deadline owner,
/// which read each as their messages say ("aggregate `X` ..." or "process
/// manager `X` ...").
pub(crate) struct DeadlineChecks {
    /// Checks, at a `Schedule<T>`, that the owner handles `T`.
    pub(crate) handled: &'static str,
    /// Checks, at a `Cancel<T>`, that the owner schedules `T`.
    pub(crate) cancelled: &'static str,
    /// Marks the types the owner schedules.
    pub(crate) schedules: &'static str,
    /// Marks the same types, read apart for the cancel's message.
    pub(crate) cancels: &'static str,
}

/// What the handlers' return types schedule and cancel: the marker impls a
/// `#[deadline]` handler and a `Cancel<T>` are checked against, and at each
/// `Schedule<T>`, the check that a handler for `T` exists.
pub(crate) fn deadline_checks<'a>(
    self_ty: &syn::Type,
    scheduled: impl Iterator<Item = &'a DeadlineUse>,
    cancelled: impl Iterator<Item = &'a DeadlineUse>,
    names: &DeadlineChecks,
) -> TokenStream {
    let private = quote!(::cqrs_core::__private);
    let ident = |name: &str, span: Span| syn::Ident::new(name, span);
    let mut seen = HashSet::new();
    let mut checks = Vec::new();
    for scheduled in scheduled {
        let deadline = &scheduled.deadline;
        let owner = respan(self_ty, scheduled.span);
        let handled = ident(names.handled, scheduled.span);
        checks.push(quote_spanned! {scheduled.span=>
            const _: () = {
                let _ = #private::#handled::<#owner, #deadline>;
            };
        });
        if seen.insert(deadline.to_token_stream().to_string()) {
            let schedules = ident(names.schedules, Span::call_site());
            let cancels = ident(names.cancels, Span::call_site());
            checks.push(quote! {
                #[automatically_derived]
                impl #private::#schedules<#deadline> for #self_ty {}
                #[automatically_derived]
                impl #private::#cancels<#deadline> for #self_ty {}
            });
        }
    }
    for cancelled in cancelled {
        let deadline = &cancelled.deadline;
        let owner = respan(self_ty, cancelled.span);
        let check = ident(names.cancelled, cancelled.span);
        checks.push(quote_spanned! {cancelled.span=>
            const _: () = {
                let _ = #private::#check::<#owner, #deadline>;
            };
        });
    }
    quote!(#(#checks)*)
}

/// The owner's type (aggregate or process manager) with every token at
/// `span`: rustc reports an unmet bound on it there, at the line to fix,
/// not at the impl block.
pub(crate) fn respan(ty: &syn::Type, span: Span) -> TokenStream {
    fn tokens(stream: TokenStream, span: Span) -> TokenStream {
        stream
            .into_iter()
            .map(|token| match token {
                TokenTree::Group(group) => {
                    let mut respanned = Group::new(group.delimiter(), tokens(group.stream(), span));
                    respanned.set_span(span);
                    TokenTree::Group(respanned)
                }
                mut token => {
                    token.set_span(span);
                    token
                }
            })
            .collect()
    }
    tokens(ty.to_token_stream(), span)
}

/// The type as written, for messages and the registry.
pub(crate) fn type_path(ty: &syn::Type) -> String {
    ty.to_token_stream().to_string().replace(' ', "")
}
