//! `#[derive(DecisionModel)]`: the boundary's tags from the `#[tag]`
//! fields, the types it names, and the event enum it records, whose every
//! event it must apply.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};

use crate::ast::DecisionStruct;

pub(crate) fn derive(input: &DecisionStruct) -> TokenStream {
    let private = quote!(::cqrs_core::__private);
    let ident = &input.original.ident;
    let Some(attr) = &input.attr else {
        return TokenStream::new();
    };
    let (Some(name), Some(command), Some(event), Some(error)) =
        (&attr.name, &attr.command, &attr.event, &attr.error)
    else {
        return TokenStream::new();
    };
    let keys = input
        .tags
        .iter()
        .filter_map(|field| field.ident.as_ref())
        .map(ToString::to_string);
    let tags = input.tags.iter().filter_map(|field| {
        let field = field.ident.as_ref()?;
        let key = field.to_string();
        Some(quote_spanned!(field.span()=> #private::tag(#key, &self.#field)?))
    });
    quote! {
        #[automatically_derived]
        impl #private::DecisionModel for #ident {
            const NAME: &'static str = #name;
            const TAG_KEYS: &'static [&'static str] = &[#(#keys),*];
            const APPLIES: &'static [#private::Applied] =
                <Self as #private::DecisionHandlers>::APPLIES;
            type Command = #command;
            type Event = #event;
            type Error = #error;

            fn tags(&self) -> ::core::result::Result<::std::vec::Vec<#private::Tag>, #private::InvalidTag> {
                ::core::result::Result::Ok(::std::vec![#(#tags),*])
            }

            fn apply_recorded(
                &mut self,
                __envelope: &#private::Envelope,
            ) -> ::core::result::Result<(), #private::PayloadError> {
                <Self as #private::DecisionHandlers>::apply_recorded(self, __envelope)
            }

            fn decide(
                &self,
                __command: #command,
            ) -> ::core::result::Result<#private::Decision<#event>, #error> {
                <Self as #private::DecisionHandlers>::decide(self, __command)
            }
        }

        // Its events go to its #[apply] methods, as an aggregate's do: one
        // it records and never applies is reported at the event enum.
        #[automatically_derived]
        impl #private::EventOwner for #event {
            type Aggregate = #ident;
        }
    }
}
