//! A free `#[event_handler]`: registered as a durable processor, or inline after the commit.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::EventHandler;

pub(crate) fn expand(input: &EventHandler) -> TokenStream {
    let private = quote!(::cqrs_core::__private);
    let original = &input.original;
    let function = &original.sig.ident;
    let Some(event) = input.event() else {
        // Refused by validation.
        return quote!(#original);
    };
    let event = &event;
    // Every use of the event type is spanned at it, with the path spelled
    // out (an interpolated `#private` keeps the attribute's span): a type no
    // event enum wraps is one error, at the parameter.
    let from_event =
        quote_spanned!(event.span()=> <#event as ::cqrs_core::__private::EventPayload>::from_event);
    let event_enum =
        quote_spanned!(event.span()=> <#event as ::cqrs_core::__private::EventPayload>::Event);
    let event_name =
        quote_spanned!(event.span()=> <#event as ::cqrs_core::__private::EventPayload>::NAME);
    // An envelope of another enum is a mismatch at the parameter.
    let args = match input.envelope() {
        Some(span) => {
            let envelope = quote_spanned!(span=> __envelope);
            quote!(__event, #envelope)
        }
        None => quote!(__event),
    };
    let output_span = match &original.sig.output {
        syn::ReturnType::Type(_, ty) => ty.span(),
        syn::ReturnType::Default => function.span(),
    };
    let outcome = |call: TokenStream| quote_spanned!(output_span=> #private::HandlerOutcome::into_outcome(#call));
    let run = if original.sig.asyncness.is_some() {
        let outcome = outcome(quote!(#function(#args).await));
        quote! {
            #private::HandlerFuture::Pending(::std::boxed::Box::pin(async move { #outcome }))
        }
    } else {
        let outcome = outcome(quote!(#function(#args)));
        quote!(#private::HandlerFuture::Ready(#outcome))
    };
    let inline = input.attr.inline;
    let name = match &input.attr.name {
        Some(name) => quote!(#name),
        None => {
            let function = function.to_string();
            quote!(::core::concat!(::core::module_path!(), "::", #function))
        }
    };
    quote! {
        #original

        const _: () = {
            fn __call<'__a>(
                __envelope: &'__a (dyn ::core::any::Any + ::core::marker::Send + ::core::marker::Sync),
            ) -> #private::HandlerFuture<'__a> {
                let ::core::option::Option::Some(__envelope) = __envelope
                    .downcast_ref::<#private::Envelope<#event_enum>>()
                else {
                    return #private::HandlerFuture::Skip;
                };
                let ::core::option::Option::Some(__event) = #from_event(&__envelope.payload) else {
                    return #private::HandlerFuture::Skip;
                };
                #run
            }

            #private::inventory::submit! {
                #private::EventHandlerRegistration::new(
                    #name,
                    ::core::module_path!(),
                    #event_name,
                    ::core::stringify!(#event),
                    #inline,
                    #private::type_id::<#event_enum>,
                    #private::decode_envelope::<#event_enum>,
                    __call,
                )
            }
        };
    }
}
