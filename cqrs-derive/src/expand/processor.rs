use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::LitStr;
use syn::spanned::Spanned;

use crate::ast::{ProcessorHandler, ProcessorImpl, ProcessorKind, ProcessorParam};

pub(crate) fn expand(input: &ProcessorImpl, name: &LitStr) -> TokenStream {
    let private = quote!(::cqrs_core::__private);
    let original = &input.original;
    let self_ty = &original.self_ty;
    let handles = input.handlers.iter().map(|handler| {
        let event = &handler.event;
        quote_spanned!(event.span()=> <#event as #private::EventPayload>::NAME)
    });
    let dispatch = input
        .handlers
        .iter()
        .map(|handler| dispatch(handler, input.kind));
    let body = quote! {
        ::std::boxed::Box::pin(async move {
            let __name = __envelope.event_name.as_str();
            #(#dispatch)*
            ::core::result::Result::Ok(())
        })
    };
    let implementation = match input.kind {
        ProcessorKind::Projection => quote! {
            #[automatically_derived]
            impl #private::Projection for #self_ty {
                const NAME: &'static str = #name;

                fn handles(__name: &str) -> bool {
                    [#(#handles),*].contains(&__name)
                }

                fn apply<'__a>(
                    __envelope: &'__a #private::Envelope,
                    __views: &'__a mut #private::Views<'_, Self>,
                ) -> #private::BoxFuture<'__a, ::core::result::Result<(), #private::ProcessorError>> {
                    #body
                }
            }

            const _: () = {
                #private::inventory::submit! {
                    #private::ProcessorRegistration::projection::<#self_ty>()
                }
            };
        },
        ProcessorKind::ProcessManager => quote! {
            #[automatically_derived]
            impl #private::ProcessManager for #self_ty {
                const NAME: &'static str = #name;

                fn handles(__name: &str) -> bool {
                    [#(#handles),*].contains(&__name)
                }

                fn handle<'__a>(
                    &'__a self,
                    __envelope: &'__a #private::Envelope,
                    __context: &'__a #private::ProcessContext<'__a>,
                ) -> #private::BoxFuture<'__a, ::core::result::Result<(), #private::ProcessorError>> {
                    #body
                }
            }

            const _: () = {
                #private::inventory::submit! {
                    #private::ProcessorRegistration::process_manager::<#self_ty>()
                }
            };
        },
    };
    quote! {
        #original
        #implementation
    }
}

/// Decodes the event if it is this handler's, and calls it.
fn dispatch(handler: &ProcessorHandler, kind: ProcessorKind) -> TokenStream {
    let private = quote!(::cqrs_core::__private);
    let event = &handler.event;
    let method = &handler.ident;
    let payload = quote_spanned!(event.span()=> <#event as #private::EventPayload>);
    let args = handler.params.iter().map(|param| match param {
        ProcessorParam::SelfRef => quote!(self),
        ProcessorParam::Event => quote!(__event),
        ProcessorParam::Envelope => quote!(__envelope),
        ProcessorParam::Views => quote!(&mut *__views),
        ProcessorParam::Context => quote!(__context),
    });
    let call = quote!(Self::#method(#(#args),*));
    let call = if handler.is_async {
        quote!(#call.await)
    } else {
        call
    };
    let _ = kind;
    quote! {
        if __name == #payload::NAME {
            let __decoded = #private::decode_event::<#payload::Event>(__envelope)?;
            if let ::core::option::Option::Some(__event) = #payload::from_event(&__decoded) {
                #private::processor_outcome(#call)?;
            }
        }
    }
}
