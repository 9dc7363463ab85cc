//! Minimal impls emitted beside a compile error, so one mistake is reported
//! once instead of again at every use of the item.

use proc_macro2::TokenStream;
use quote::quote;

use crate::ast::{Aggregate, ProcessorImpl, ProcessorKind};
use crate::expand::aggregate::{initial, owners};
use crate::valid::Unusable;

/// An `Aggregate` impl on the types the attribute names, but those
/// `unusable`, which it leaves unknown.
pub(crate) fn aggregate(input: &Aggregate, unusable: Unusable) -> TokenStream {
    let ident = &input.original.ident;
    let attr = input.attr.as_ref();
    let unknown = quote!(::cqrs_core::__private::Unknown);
    let pick = |ty: Option<&syn::Type>| ty.map_or_else(|| unknown.clone(), |ty| quote!(#ty));
    let command = attr
        .and_then(|attr| attr.command.as_ref())
        .filter(|_| !unusable.command);
    let event = attr
        .and_then(|attr| attr.event.as_ref())
        .filter(|_| !unusable.event);
    let command_type = pick(command);
    let event_type = pick(event);
    let error_type = pick(attr.and_then(|attr| attr.error.as_ref()));
    let services_type = attr
        .and_then(|attr| attr.services.as_ref())
        .map_or_else(|| quote!(()), |ty| quote!(#ty));
    let name = attr
        .and_then(|attr| attr.name.as_ref())
        .map_or_else(|| quote!(""), |name| quote!(#name));
    let owners = owners(ident, command, event);
    let initial = initial(ident);
    quote! {
        #[automatically_derived]
        impl ::cqrs_core::__private::Aggregate for #ident {
            const NAME: &'static str = #name;
            type Command = #command_type;
            type Event = #event_type;
            type Error = #error_type;
            type Services = #services_type;
            #initial

            fn handle<'__a>(
                &'__a self,
                _: Self::Command,
                _: &'__a ::cqrs_core::__private::CommandContext<'__a>,
                _: &'__a Self::Services,
            ) -> impl ::core::future::Future<
                Output = ::cqrs_core::__private::DecideResult<Self>,
            > + ::core::marker::Send + '__a {
                ::core::future::pending()
            }

            fn apply(&mut self, _: &Self::Event) {
                ::core::unreachable!()
            }
        }

        #owners
    }
}

/// For `#[derive(Command)]` on something that is not an enum.
pub(crate) fn command(ident: &syn::Ident) -> TokenStream {
    quote! {
        #[automatically_derived]
        impl ::cqrs_core::__private::Command for #ident {
            fn name(&self) -> &'static str {
                ::core::unreachable!()
            }

            fn encode(
                &self,
            ) -> ::core::result::Result<::cqrs_core::__private::JsonPayload, ::cqrs_core::__private::serde_json::Error> {
                ::core::unreachable!()
            }
        }

        #[automatically_derived]
        impl<__C> ::cqrs_core::__private::CommandVariant<__C> for #ident {}

        #[automatically_derived]
        impl<__E> ::cqrs_core::__private::EventVariant<__E> for #ident {}

        #[automatically_derived]
        impl ::cqrs_core::__private::Dispatch for #ident {
            type Aggregate = <Self as ::cqrs_core::__private::CommandOwner>::Aggregate;

            fn dispatch<'__a>(
                self,
                _: &'__a Self::Aggregate,
                _: &'__a ::cqrs_core::__private::CommandContext<'__a>,
                _: &'__a <Self::Aggregate as ::cqrs_core::__private::Aggregate>::Services,
            ) -> impl ::core::future::Future<
                Output = ::cqrs_core::__private::DecideResult<Self::Aggregate>,
            > + ::core::marker::Send + '__a {
                ::core::future::pending()
            }
        }
    }
}

/// For `#[derive(Event)]` on something that is not an enum.
pub(crate) fn event(ident: &syn::Ident) -> TokenStream {
    quote! {
        #[automatically_derived]
        impl ::cqrs_core::__private::Event for #ident {
            const TYPES: &'static [::cqrs_core::__private::EventType] = &[];

            fn event_type(&self) -> &'static ::cqrs_core::__private::EventType {
                ::core::unreachable!()
            }

            fn encode(&self) -> ::core::result::Result<
                ::cqrs_core::__private::JsonPayload,
                ::cqrs_core::__private::serde_json::Error,
            > {
                ::core::unreachable!()
            }

            fn decode(
                _: &str,
                _: u32,
                _: &::cqrs_core::__private::JsonPayload,
            ) -> ::core::result::Result<Self, ::cqrs_core::__private::PayloadError> {
                ::core::unreachable!()
            }
        }

        #[automatically_derived]
        impl<__C> ::cqrs_core::__private::CommandVariant<__C> for #ident {}

        #[automatically_derived]
        impl<__E> ::cqrs_core::__private::EventVariant<__E> for #ident {}

        #[automatically_derived]
        impl ::cqrs_core::__private::ApplyTo for #ident {
            type Aggregate = <Self as ::cqrs_core::__private::EventOwner>::Aggregate;

            fn apply_to(&self, _: &mut Self::Aggregate) {
                ::core::unreachable!()
            }
        }
    }
}

/// A placeholder impl beside the errors of a malformed block, so the code
/// that uses the projection or process manager does not fail too.
pub(crate) fn processor(input: &ProcessorImpl) -> TokenStream {
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
                ) -> #private::BoxFuture<'__a, ::core::result::Result<(), #private::HandlerError>> {
                    ::std::boxed::Box::pin(::core::future::ready(::core::result::Result::Ok(())))
                }
            }
        },
        ProcessorKind::TableProjection => quote! {
            #[automatically_derived]
            impl #private::TableProjection for #self_ty {
                const NAME: &'static str = "";
                const TABLES: &'static [&'static str] = &[];
                const MIGRATIONS: #private::TableMigrations = #private::TableMigrations {
                    sqlite: &[],
                    postgres: &[],
                };

                fn handles(_: &str) -> bool {
                    false
                }

                fn apply<'__a>(
                    _: &'__a #private::Envelope,
                    _: &'__a mut #private::Tables<'_>,
                ) -> #private::BoxFuture<'__a, ::core::result::Result<(), #private::HandlerError>> {
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
                ) -> #private::BoxFuture<
                    '__a,
                    ::core::result::Result<::std::vec::Vec<#private::DeadlineChange>, #private::HandlerError>,
                > {
                    ::std::boxed::Box::pin(::core::future::ready(::core::result::Result::Ok(
                        ::std::vec::Vec::new(),
                    )))
                }
            }
        },
    };
    quote! {
        #original
        #implementation

        #[automatically_derived]
        impl #private::NamedProcessor for #self_ty {
            const NAME: &'static str = "";
        }
    }
}
