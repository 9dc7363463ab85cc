//! `#[aggregate_impl]`: routes each command and event to its handler, and the coverage checks.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::{AggregateImpl, Applier, CommandHandler, ParamKind};

pub(crate) fn expand(input: &AggregateImpl) -> TokenStream {
    let original = &input.original;
    let self_ty = &original.self_ty;
    let handlers = input
        .command_handlers
        .iter()
        .filter_map(|handler| command_handler(self_ty, handler));
    let appliers = input
        .appliers
        .iter()
        .filter_map(|applier| applier_impl(self_ty, applier));
    let private = quote!(::cqrs_core::__private);
    let handlers = if input.lost_command {
        quote! {
            #[automatically_derived]
            impl<__C> #private::HandleCommand<__C> for #self_ty {
                const CREATES: bool = false;

                fn handle_command<'__a>(
                    &'__a self,
                    _: __C,
                    _: &'__a #private::CommandContext<'__a>,
                    _: &'__a <Self as #private::Aggregate>::Services,
                ) -> #private::Decided<
                    impl ::core::future::Future<Output = #private::Decision<Self>> + ::core::marker::Send + '__a,
                    #private::Decision<Self>,
                > {
                    #private::Decided::Later(::core::future::pending())
                }
            }
        }
    } else {
        quote!(#(#handlers)*)
    };
    let appliers = if input.lost_event {
        quote! {
            #[automatically_derived]
            impl<__E> #private::ApplyEvent<__E> for #self_ty {
                fn apply_event(&mut self, _: &__E) {}
            }
        }
    } else {
        quote!(#(#appliers)*)
    };
    quote! {
        #original
        #handlers
        #appliers
    }
}

fn command_handler(self_ty: &syn::Type, handler: &CommandHandler) -> Option<TokenStream> {
    let private = quote!(::cqrs_core::__private);
    let command = handler.command()?;
    let creates = handler.attr.create;
    let body = if let (true, Some(output)) = (handler.valid, &handler.output) {
        let method = handler.ident();
        let args = handler.params.iter().map(|param| match param.kind {
            ParamKind::Command => quote!(__command),
            ParamKind::Context => quote!(__context),
            ParamKind::Services => quote_spanned!(param.original.ty.span()=> __services),
            // Refused by validation, which makes the handler a placeholder.
            ParamKind::Unexpected => quote!(::core::unreachable!()),
        });
        let call = quote!(Self::#method(self, #(#args),*));
        let call = if handler.is_async() {
            quote!(#call.await)
        } else {
            call
        };
        let result = quote_spanned!(output.span=> ::cqrs_core::__private::CommandResult::into_result(__result));
        let events = quote_spanned! {output.events=>
            #private::IntoEvents::<<Self as #private::Aggregate>::Event>::into_events(__events)
        };
        let error = quote_spanned! {output.error=>
            #private::IntoDomainError::<<Self as #private::Aggregate>::Error>::into_domain_error(__error)
        };
        // The match is spanned at the return type too: a return type that is
        // not a `Result` is one error there, not a second at the attribute.
        let decide = quote_spanned! {output.span=>
            let __result = #call;
            match #result {
                ::core::result::Result::Ok(__events) => ::core::result::Result::Ok(#events),
                ::core::result::Result::Err(__error) => ::core::result::Result::Err(#error),
            }
        };
        // A plain handler decides at once; its `Later` is never made.
        if handler.is_async() {
            quote!(#private::Decided::Later(async move { #decide }))
        } else {
            quote!(#private::Decided::<::core::future::Pending<_>, _>::Now({ #decide }))
        }
    } else {
        quote!(#private::Decided::Later(::core::future::pending()))
    };
    // A handler of a type no command enum wraps would never run.
    let handled = quote_spanned! {command.span()=>
        ::cqrs_core::__private::handled_command::<
            <#self_ty as ::cqrs_core::__private::Aggregate>::Command,
            #command,
        >
    };
    Some(quote! {
        const _: () = {
            let _ = #handled;
        };

        #[automatically_derived]
        impl #private::HandleCommand<#command> for #self_ty {
            const CREATES: bool = #creates;

            #[inline]
            fn handle_command<'__a>(
                &'__a self,
                __command: #command,
                __context: &'__a #private::CommandContext<'__a>,
                __services: &'__a <Self as #private::Aggregate>::Services,
            ) -> #private::Decided<
                impl ::core::future::Future<Output = #private::Decision<Self>> + ::core::marker::Send + '__a,
                #private::Decision<Self>,
            > {
                #body
            }
        }
    })
}

fn applier_impl(self_ty: &syn::Type, applier: &Applier) -> Option<TokenStream> {
    let private = quote!(::cqrs_core::__private);
    let event = applier.event()?;
    let body = if applier.valid {
        let method = applier.ident();
        quote!(Self::#method(self, __event))
    } else {
        quote!(::core::unreachable!())
    };
    let applied = quote_spanned! {event.span()=>
        ::cqrs_core::__private::applied_event::<
            <#self_ty as ::cqrs_core::__private::Aggregate>::Event,
            #event,
        >
    };
    Some(quote! {
        const _: () = {
            let _ = #applied;
        };

        #[automatically_derived]
        impl #private::ApplyEvent<#event> for #self_ty {
            #[inline]
            fn apply_event(&mut self, __event: &#event) {
                #body
            }
        }
    })
}
