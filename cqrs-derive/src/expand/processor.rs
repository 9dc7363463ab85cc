//! `#[projection]` and `#[process_manager]`: routing events to their handlers, and registration.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::{ProcessorHandler, ProcessorImpl, ProcessorKind, ProcessorParamKind, Receiver};
use crate::attr::ProcessorArgs;

pub(crate) fn expand(input: &ProcessorImpl, args: &ProcessorArgs) -> TokenStream {
    let name = &args.name;
    let version = args
        .version
        .as_ref()
        .map(|version| quote!(const VERSION: u32 = #version;));
    let segments = args
        .segments
        .as_ref()
        .map(|segments| quote!(const SEGMENTS: u32 = #segments;));
    let private = quote!(::cqrs_core::__private);
    let original = &input.original;
    let self_ty = &original.self_ty;
    let handles = input.handlers.iter().filter_map(|handler| {
        let event = handler.event()?;
        Some(quote_spanned!(event.span()=> <#event as ::cqrs_core::__private::EventPayload>::NAME))
    });
    let dispatch = input.handlers.iter().filter_map(dispatch);
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
                #version
                #segments

                fn handles(__name: &str) -> bool {
                    [#(#handles),*].contains(&__name)
                }

                fn apply<'__a>(
                    __envelope: &'__a #private::Envelope,
                    __views: &'__a mut #private::Views<'_, Self>,
                ) -> #private::BoxFuture<'__a, ::core::result::Result<(), #private::HandlerError>> {
                    #body
                }
            }

            #[automatically_derived]
            impl #private::NamedProcessor for #self_ty {
                const NAME: &'static str = #name;
            }

            const _: () = {
                #private::inventory::submit! {
                    #private::ProcessorRegistration::projection::<#self_ty>(::core::module_path!())
                }
            };
        },
        ProcessorKind::ProcessManager => quote! {
            #[automatically_derived]
            impl #private::ProcessManager for #self_ty {
                const NAME: &'static str = #name;
                #segments

                fn handles(__name: &str) -> bool {
                    [#(#handles),*].contains(&__name)
                }

                fn handle<'__a>(
                    &'__a self,
                    __envelope: &'__a #private::Envelope,
                    __context: &'__a #private::ProcessContext<'__a>,
                ) -> #private::BoxFuture<'__a, ::core::result::Result<(), #private::HandlerError>> {
                    #body
                }
            }

            #[automatically_derived]
            impl #private::NamedProcessor for #self_ty {
                const NAME: &'static str = #name;
            }

            const _: () = {
                #private::inventory::submit! {
                    #private::ProcessorRegistration::new(
                        #name,
                        ::core::module_path!(),
                        #private::ProcessorKind::ProcessManager,
                        #private::process_manager_runner::<#self_ty>,
                    )
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
fn dispatch(handler: &ProcessorHandler) -> Option<TokenStream> {
    let event = handler.event()?;
    let method = handler.ident();
    let receiver = (handler.receiver == Receiver::Ref)
        .then(|| quote!(self))
        .into_iter();
    let args = handler.params.iter().map(|param| match param.kind {
        ProcessorParamKind::Event => quote!(__event),
        ProcessorParamKind::Envelope => quote!(__envelope),
        ProcessorParamKind::Views { .. } => quote!(&mut *__views),
        ProcessorParamKind::Context => quote!(__context),
        // Refused by validation, which drops the handler.
        ProcessorParamKind::Unexpected => quote!(::core::unreachable!()),
    });
    let call = quote!(Self::#method(#(#receiver,)* #(#args),*));
    let call = if handler.is_async() {
        quote!(#call.await)
    } else {
        call
    };
    // All spanned at the event type, with the paths spelled out (an
    // interpolated path keeps the attribute's span), so a type that is not
    // an event is one error, there.
    Some(quote_spanned! {event.span()=>
        if __name == <#event as ::cqrs_core::__private::EventPayload>::NAME {
            let __decoded = ::cqrs_core::__private::decode_event::<
                <#event as ::cqrs_core::__private::EventPayload>::Event,
            >(__envelope)?;
            if let ::core::option::Option::Some(__event) =
                <#event as ::cqrs_core::__private::EventPayload>::from_event(&__decoded)
            {
                ::cqrs_core::__private::processor_outcome(#call)?;
            }
        }
    })
}
