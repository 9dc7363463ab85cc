use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::EventHandler;

pub(crate) fn expand(input: &EventHandler) -> TokenStream {
    let private = quote!(::cqrs_core::__private);
    let original = &input.original;
    let function = &original.sig.ident;
    let event = &input.event;
    let payload = quote_spanned!(event.span()=> <#event as #private::EventPayload>);
    let args = if input.takes_envelope {
        quote!(__event, __envelope)
    } else {
        quote!(__event)
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
    let name = function.to_string();
    quote! {
        #original

        const _: () = {
            fn __call<'__a>(
                __envelope: &'__a (dyn ::core::any::Any + ::core::marker::Send + ::core::marker::Sync),
            ) -> #private::HandlerFuture<'__a> {
                let ::core::option::Option::Some(__envelope) = __envelope
                    .downcast_ref::<#private::Envelope<#payload::Event>>()
                else {
                    return #private::HandlerFuture::Skip;
                };
                let ::core::option::Option::Some(__event) = #payload::from_event(&__envelope.payload) else {
                    return #private::HandlerFuture::Skip;
                };
                #run
            }

            #private::inventory::submit! {
                #private::EventHandlerRegistration::new(
                    ::core::concat!(::core::module_path!(), "::", #name),
                    #payload::NAME,
                    ::core::stringify!(#event),
                    #private::type_id::<#payload::Event>,
                    __call,
                )
            }
        };
    }
}
