//! `#[projection]` and `#[process_manager]`: routing events to their handlers, and registration.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use super::{DeadlineChecks, deadline_checks, respan};
use crate::ast::{
    ProcessDeadline, ProcessDeadlineParamKind, ProcessorHandler, ProcessorImpl, ProcessorKind,
    ProcessorParamKind, Receiver,
};
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
    let dispatch: Vec<TokenStream> = input
        .handlers
        .iter()
        .filter_map(|handler| dispatch(handler, input.kind))
        .collect();
    let body = quote! {
        ::std::boxed::Box::pin(async move {
            let __name = __envelope.event_name.as_str();
            #(#dispatch)*
            ::core::result::Result::Ok(())
        })
    };
    let process_body = quote! {
        ::std::boxed::Box::pin(async move {
            let __name = __envelope.event_name.as_str();
            let mut __changes = ::std::vec::Vec::new();
            #(#dispatch)*
            ::core::result::Result::Ok(__changes)
        })
    };
    let deadlines = process_deadlines(input);
    let owner = (!input.deadline_handlers.is_empty()).then(|| {
        quote! {
            const _: () = {
                #private::inventory::submit! {
                    #private::DeadlineOwner::process::<#self_ty>()
                }
            };
        }
    });
    let checks = process_deadline_checks(self_ty, input);
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
        ProcessorKind::TableProjection => {
            let tables = args
                .tables
                .iter()
                .flat_map(|tables| &tables.names)
                .map(|name| name.to_string());
            let steps = |files: Option<&Vec<syn::LitStr>>| -> Vec<TokenStream> {
                files
                    .into_iter()
                    .flatten()
                    .map(|file| {
                        quote_spanned! {file.span()=>
                            ::core::include_str!(::core::concat!(::core::env!("CARGO_MANIFEST_DIR"), "/", #file))
                        }
                    })
                    .collect()
            };
            let migrations = args.migrations.as_ref();
            let sqlite = steps(migrations.map(|migrations| &migrations.sqlite));
            let postgres = steps(migrations.map(|migrations| &migrations.postgres));
            quote! {
                #[automatically_derived]
                impl #private::TableProjection for #self_ty {
                    const NAME: &'static str = #name;
                    #version
                    #segments
                    const TABLES: &'static [&'static str] = &[#(#tables),*];
                    const MIGRATIONS: #private::TableMigrations = #private::TableMigrations {
                        sqlite: &[#(#sqlite),*],
                        postgres: &[#(#postgres),*],
                    };

                    fn handles(__name: &str) -> bool {
                        [#(#handles),*].contains(&__name)
                    }

                    fn apply<'__a>(
                        __envelope: &'__a #private::Envelope,
                        __tables: &'__a mut #private::Tables<'_>,
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
                        #private::ProcessorRegistration::table_projection::<#self_ty>(::core::module_path!())
                    }
                };
            }
        }
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
                ) -> #private::BoxFuture<
                    '__a,
                    ::core::result::Result<::std::vec::Vec<#private::DeadlineChange>, #private::HandlerError>,
                > {
                    #process_body
                }

                #deadlines
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

            #owner
            #checks
        },
    };
    quote! {
        #original
        #implementation
    }
}

/// Decodes the event if it is this handler's, and calls it; a process
/// manager's handler adds the deadlines it returns to `__changes`.
fn dispatch(handler: &ProcessorHandler, kind: ProcessorKind) -> Option<TokenStream> {
    let event = handler.event()?;
    let method = handler.ident();
    let receiver = (handler.receiver == Receiver::Ref)
        .then(|| quote!(self))
        .into_iter();
    let args = handler.params.iter().map(|param| match param.kind {
        ProcessorParamKind::Event => quote!(__event),
        ProcessorParamKind::Envelope => quote!(__envelope),
        ProcessorParamKind::Views { .. } => quote!(&mut *__views),
        ProcessorParamKind::Tables { .. } => quote!(&mut *__tables),
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
    let outcome = match kind {
        ProcessorKind::Projection | ProcessorKind::TableProjection => {
            quote_spanned! {event.span()=>
                ::cqrs_core::__private::processor_outcome(#call)?;
            }
        }
        // At the return type, which is what does not fit.
        ProcessorKind::ProcessManager => {
            let span = handler
                .output
                .as_ref()
                .map_or(event.span(), |output| output.span);
            quote_spanned! {span=>
                __changes.extend(::cqrs_core::__private::process_outcome(#call)?);
            }
        }
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
                #outcome
            }
        }
    })
}

/// A process manager's `handle_deadline`: decodes the due deadline for the
/// handler of its type and calls it; none when it has no `#[deadline]`.
fn process_deadlines(input: &ProcessorImpl) -> Option<TokenStream> {
    if input.deadline_handlers.is_empty() {
        return None;
    }
    let private = quote!(::cqrs_core::__private);
    let dispatch = input.deadline_handlers.iter().filter_map(deadline_dispatch);
    Some(quote! {
        fn handle_deadline<'__a>(
            &'__a self,
            __deadline: &'__a #private::DeadlineContext<'__a>,
            __context: &'__a #private::ProcessContext<'__a>,
        ) -> #private::BoxFuture<
            '__a,
            ::core::result::Result<::std::vec::Vec<#private::DeadlineChange>, #private::HandlerError>,
        > {
            ::std::boxed::Box::pin(async move {
                let __envelope = __context.event();
                let __name = __envelope.event_name.as_str();
                #(#dispatch)*
                ::core::result::Result::Err(#private::no_deadline_handler(
                    <Self as #private::ProcessManager>::NAME,
                    __name,
                ))
            })
        }
    })
}

/// Decodes the deadline if it is this handler's, and calls it.
fn deadline_dispatch(handler: &ProcessDeadline) -> Option<TokenStream> {
    let deadline = handler.deadline()?;
    let method = handler.ident();
    let args = handler.params.iter().map(|param| match param.kind {
        ProcessDeadlineParamKind::Deadline => quote!(__value),
        ProcessDeadlineParamKind::Context => quote!(__context),
        ProcessDeadlineParamKind::DeadlineContext => quote!(__deadline),
        // Refused by validation, which drops the handler.
        ProcessDeadlineParamKind::Unexpected => quote!(::core::unreachable!()),
    });
    let call = quote!(Self::#method(self, #(#args),*));
    let call = if handler.is_async() {
        quote!(#call.await)
    } else {
        call
    };
    // Spanned at the deadline type, so a type that is not a deadline is
    // one error, there.
    Some(quote_spanned! {deadline.span()=>
        if __name == <#deadline as ::cqrs_core::__private::Deadline>::NAME {
            let __value = ::cqrs_core::__private::decode_process_deadline::<#deadline>(__envelope)?;
            return ::cqrs_core::__private::process_outcome(#call);
        }
    })
}

/// The checks between what a process manager schedules, cancels and
/// handles, each at the line to fix, as for an aggregate.
fn process_deadline_checks(self_ty: &syn::Type, input: &ProcessorImpl) -> TokenStream {
    let private = quote!(::cqrs_core::__private);
    let mut checks = vec![deadline_checks(
        self_ty,
        input.scheduled(),
        input.cancelled(),
        &DeadlineChecks {
            handled: "process_deadline_handled",
            cancelled: "process_deadline_cancelled",
            schedules: "ProcessSchedules",
            cancels: "ProcessCancels",
        },
    )];
    for handler in &input.deadline_handlers {
        let Some(deadline) = handler.deadline() else {
            continue;
        };
        let owner = respan(self_ty, deadline.span());
        checks.push(quote_spanned! {deadline.span()=>
            const _: () = {
                let _ = #private::process_deadline_scheduled::<#owner, #deadline>;
            };
        });
        checks.push(quote! {
            #[automatically_derived]
            impl #private::ProcessHandlesDeadline<#deadline> for #self_ty {}
        });
    }
    quote!(#(#checks)*)
}
