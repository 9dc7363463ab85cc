//! Code generation, one file per macro. Input here is already validated.

pub(crate) mod aggregate;
pub(crate) mod aggregate_impl;
pub(crate) mod command;
pub(crate) mod deadline;
pub(crate) mod domain;
pub(crate) mod event;
pub(crate) mod event_handler;
pub(crate) mod indexed;
pub(crate) mod processor;

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::ToTokens;

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
