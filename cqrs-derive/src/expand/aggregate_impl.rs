//! `#[aggregate_impl]`: routes each command, deadline and event to its
//! handler, and the coverage checks.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use super::{DeadlineChecks, deadline_checks, respan, type_path};
use crate::ast::{AggregateImpl, Applier, Handler, ParamKind};

pub(crate) fn expand(input: &AggregateImpl) -> TokenStream {
    let original = &input.original;
    let self_ty = &original.self_ty;
    let handlers = input
        .command_handlers
        .iter()
        .filter_map(|handler| command_handler(self_ty, handler));
    let deadline_handlers = if input.lost_deadline {
        quote! {
            #[automatically_derived]
            impl<__D> ::cqrs_core::__private::HandleDeadline<__D> for #self_ty {
                fn handle_deadline<'__a>(
                    &'__a self,
                    _: __D,
                    _: &'__a ::cqrs_core::__private::DeadlineContext<'__a>,
                    _: &'__a <Self as ::cqrs_core::__private::Aggregate>::Services,
                ) -> ::cqrs_core::__private::Decided<
                    impl ::core::future::Future<Output = ::cqrs_core::__private::HandlerResult<Self>> + ::core::marker::Send + '__a,
                    ::cqrs_core::__private::HandlerResult<Self>,
                > {
                    ::cqrs_core::__private::Decided::Later(::core::future::pending())
                }
            }
        }
    } else {
        let handlers = input
            .deadline_handlers
            .iter()
            .filter_map(|handler| deadline_handler(self_ty, handler));
        quote!(#(#handlers)*)
    };
    let deadline_checks = deadline_checks(
        self_ty,
        input.scheduled(),
        input.cancelled(),
        &DeadlineChecks {
            handled: "deadline_handled",
            cancelled: "deadline_cancelled",
            schedules: "Schedules",
            cancels: "Cancels",
        },
    );
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
                    impl ::core::future::Future<Output = #private::HandlerResult<Self>> + ::core::marker::Send + '__a,
                    #private::HandlerResult<Self>,
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
        #deadline_handlers
        #deadline_checks
        #appliers
    }
}

fn command_handler(self_ty: &syn::Type, handler: &Handler) -> Option<TokenStream> {
    let private = quote!(::cqrs_core::__private);
    let command = handler.input()?;
    let creates = handler.attr.create;
    let body = decide(handler);
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
                __input: #command,
                __context: &'__a #private::CommandContext<'__a>,
                __services: &'__a <Self as #private::Aggregate>::Services,
            ) -> #private::Decided<
                impl ::core::future::Future<Output = #private::HandlerResult<Self>> + ::core::marker::Send + '__a,
                #private::HandlerResult<Self>,
            > {
                #body
            }
        }
    })
}

fn deadline_handler(self_ty: &syn::Type, handler: &Handler) -> Option<TokenStream> {
    let private = quote!(::cqrs_core::__private);
    let deadline = handler.input()?;
    let body = decide(handler);
    // A handler of a type the aggregate never schedules would never run.
    let owner = respan(self_ty, deadline.span());
    let scheduled = quote_spanned! {deadline.span()=>
        ::cqrs_core::__private::deadline_scheduled::<#owner, #deadline>
    };
    let rust_type = type_path(deadline);
    // Only a handler that can run is registered; the registration also
    // checks, at the parameter, that the type is a deadline.
    let registration = handler.valid.then(|| {
        quote_spanned! {deadline.span()=>
            const _: () = {
                static __HANDLER: #private::DeadlineHandler<#self_ty> =
                    #private::DeadlineHandler::new(#private::decide_deadline::<#self_ty, #deadline>);
                #private::inventory::submit! {
                    #private::DeadlineRegistration::new::<#self_ty, #deadline>(#rust_type, &__HANDLER)
                }
                #private::inventory::submit! {
                    #private::DeadlineOwner::of::<#self_ty>()
                }
            };
        }
    });
    Some(quote! {
        const _: () = {
            let _ = #scheduled;
        };
        #registration

        #[automatically_derived]
        impl #private::HandleDeadline<#deadline> for #self_ty {
            #[inline]
            fn handle_deadline<'__a>(
                &'__a self,
                __input: #deadline,
                __context: &'__a #private::DeadlineContext<'__a>,
                __services: &'__a <Self as #private::Aggregate>::Services,
            ) -> #private::Decided<
                impl ::core::future::Future<Output = #private::HandlerResult<Self>> + ::core::marker::Send + '__a,
                #private::HandlerResult<Self>,
            > {
                #body
            }
        }
    })
}

/// The body of `handle_command` or `handle_deadline`: calls the method and
/// turns what it returns into a decision; a placeholder for a handler with
/// mistakes.
fn decide(handler: &Handler) -> TokenStream {
    let private = quote!(::cqrs_core::__private);
    let (true, Some(output)) = (handler.valid, &handler.output) else {
        return quote!(#private::Decided::Later(::core::future::pending()));
    };
    let method = handler.ident();
    let args = handler.params.iter().map(|param| match param.kind {
        ParamKind::Input => quote!(__input),
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
    let result =
        quote_spanned!(output.span=> ::cqrs_core::__private::CommandResult::into_result(__result));
    let decision = quote_spanned! {output.events=>
        #private::decision::<<Self as #private::Aggregate>::Event, _>(__value)
    };
    let error = quote_spanned! {output.error=>
        #private::IntoDomainError::<<Self as #private::Aggregate>::Error>::into_domain_error(__error)
    };
    // The match is spanned at the return type too: a return type that is
    // not a `Result` is one error there, not a second at the attribute.
    let decide = quote_spanned! {output.span=>
        let __result = #call;
        match #result {
            ::core::result::Result::Ok(__value) => ::core::result::Result::Ok(#decision),
            ::core::result::Result::Err(__error) => ::core::result::Result::Err(#error),
        }
    };
    // A plain handler decides at once; its `Later` is never made.
    if handler.is_async() {
        quote!(#private::Decided::Later(async move { #decide }))
    } else {
        quote!(#private::Decided::<::core::future::Pending<_>, _>::Now({ #decide }))
    }
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
