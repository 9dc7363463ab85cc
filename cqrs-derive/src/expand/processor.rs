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
    // All spanned at the event type, so a type that is not an event is one
    // error, there.
    quote_spanned! {event.span()=>
        if __name == <#event as #private::EventPayload>::NAME {
            let __decoded = #private::decode_event::<<#event as #private::EventPayload>::Event>(__envelope)?;
            if let ::core::option::Option::Some(__event) = <#event as #private::EventPayload>::from_event(&__decoded) {
                #private::processor_outcome(#call)?;
            }
        }
    }
}

/// A placeholder impl beside the errors of a malformed block, so the code
/// that uses the projection or process manager does not fail too.
pub(crate) fn fallback(input: &ProcessorImpl) -> TokenStream {
    let private = quote!(::cqrs_core::__private);
    let original = &input.original;
    let self_ty = &original.self_ty;
    let implementation = match input.kind {
        ProcessorKind::Projection => quote! {
            #[automatically_derived]
            impl #private::Projection for #self_ty {
                const NAME: &'static str = "";

                fn handles(_: &str) -> bool {
                    false
                }

                fn apply<'__a>(
                    _: &'__a #private::Envelope,
                    _: &'__a mut #private::Views<'_, Self>,
                ) -> #private::BoxFuture<'__a, ::core::result::Result<(), #private::ProcessorError>> {
                    ::std::boxed::Box::pin(::core::future::ready(::core::result::Result::Ok(())))
                }
            }
        },
        ProcessorKind::ProcessManager => quote! {
            #[automatically_derived]
            impl #private::ProcessManager for #self_ty {
                const NAME: &'static str = "";

                fn handles(_: &str) -> bool {
                    false
                }

                fn handle<'__a>(
                    &'__a self,
                    _: &'__a #private::Envelope,
                    _: &'__a #private::ProcessContext<'__a>,
                ) -> #private::BoxFuture<'__a, ::core::result::Result<(), #private::ProcessorError>> {
                    ::std::boxed::Box::pin(::core::future::ready(::core::result::Result::Ok(())))
                }
            }
        },
    };
    quote! {
        #original
        #implementation
    }
}
