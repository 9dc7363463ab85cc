//! `#[derive(Aggregate)]`: the `Aggregate` impl and its registration.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::valid::CheckedAggregate;

pub(crate) fn derive(input: &CheckedAggregate) -> TokenStream {
    let CheckedAggregate {
        ident,
        attr,
        name,
        command,
        event,
        error,
    } = *input;
    let services = match &attr.services {
        Some(services) => quote!(#services),
        None => quote!(()),
    };
    // Spanned at the user's types, so a type that is not a command enum, an
    // event enum or an error is reported on the attribute key that names it.
    let command_type = quote_spanned!(command.span()=> type Command = #command;);
    let event_type = quote_spanned!(event.span()=> type Event = #event;);
    let error_type = quote_spanned!(error.span()=> type Error = #error;);
    // The whole call at the key, so a type that is not a command enum is
    // reported there once, not again at the derive.
    let dispatch = quote_spanned! {command.span()=>
        <#command as ::cqrs_core::__private::Dispatch>::dispatch(__command, self, __context, __services)
    };
    let apply_to = quote_spanned! {event.span()=>
        <#event as ::cqrs_core::__private::ApplyTo>::apply_to(__event, self)
    };
    let owners = owners(ident, Some(command), Some(event));
    let initial = initial(ident);
    let snapshots = attr.snapshot_every.as_ref().map(|every| {
        let version = attr
            .snapshot_version
            .as_ref()
            .map_or_else(|| quote!(1), |version| quote!(#version));
        // Spanned at the key: a state that does not serialize is reported there.
        quote_spanned! {every.span()=>
            const SNAPSHOT_EVERY: u64 = #every;
            const SNAPSHOT_VERSION: u32 = #version;

            fn to_snapshot(&self) -> ::core::option::Option<::core::result::Result<
                ::cqrs_core::__private::JsonPayload,
                ::cqrs_core::__private::serde_json::Error,
            >> {
                ::core::option::Option::Some(::cqrs_core::__private::SnapshotState::to_snapshot(self))
            }

            fn from_snapshot(
                __state: &::cqrs_core::__private::JsonPayload,
            ) -> ::core::option::Option<::core::result::Result<Self, ::cqrs_core::__private::serde_json::Error>> {
                ::core::option::Option::Some(<Self as ::cqrs_core::__private::SnapshotState>::from_snapshot(__state))
            }
        }
    });
    let rust_type = ident.to_string();
    let command_name = quote!(#command).to_string().replace(' ', "");
    let event_name = quote!(#event).to_string().replace(' ', "");
    let services_name = match &attr.services {
        Some(services) => {
            let services = quote!(#services).to_string().replace(' ', "");
            quote!(::core::option::Option::Some(#services))
        }
        None => quote!(::core::option::Option::None),
    };

    quote! {
        #[automatically_derived]
        impl ::cqrs_core::__private::Aggregate for #ident {
            const NAME: &'static str = #name;
            #command_type
            #event_type
            #error_type
            type Services = #services;
            #snapshots
            #initial

            #[inline]
            fn handle<'__a>(
                &'__a self,
                __command: Self::Command,
                __context: &'__a ::cqrs_core::__private::CommandContext<'__a>,
                __services: &'__a Self::Services,
            ) -> impl ::core::future::Future<
                Output = ::cqrs_core::__private::DecideResult<Self>,
            > + ::core::marker::Send + '__a {
                #dispatch
            }

            #[inline]
            fn apply(&mut self, __event: &Self::Event) {
                #apply_to
            }
        }

        #owners

        const _: () = {
            ::cqrs_core::__private::inventory::submit! {
                ::cqrs_core::__private::AggregateRegistration {
                    name: #name,
                    rust_type: ::core::concat!(::core::module_path!(), "::", #rust_type),
                    module: ::core::module_path!(),
                    command_type: #command_name,
                    event_type: #event_name,
                    services: #services_name,
                    event_types: ::cqrs_core::__private::event_types::<#ident>,
                    type_id: ::cqrs_core::__private::type_id::<#ident>,
                }
            }
        };
    }
}

/// `Aggregate::initial`, spanned at the struct: a state without `Default`
/// is reported once, there.
pub(crate) fn initial(ident: &syn::Ident) -> TokenStream {
    let initial =
        quote_spanned!(ident.span()=> <Self as ::cqrs_core::__private::InitialState>::initial());
    quote! {
        #[inline]
        fn initial() -> Self {
            #initial
        }
    }
}

/// Links the command and event enums to the aggregate. Emitted even when the
/// attribute is incomplete, so the enums' derives do not fail on top.
pub(crate) fn owners(
    ident: &syn::Ident,
    command: Option<&syn::Type>,
    event: Option<&syn::Type>,
) -> TokenStream {
    let command = command.map(|command| {
        quote_spanned! {command.span()=>
            #[automatically_derived]
            impl ::cqrs_core::__private::CommandOwner for #command {
                type Aggregate = #ident;
            }
        }
    });
    let event = event.map(|event| {
        quote_spanned! {event.span()=>
            #[automatically_derived]
            impl ::cqrs_core::__private::EventOwner for #event {
                type Aggregate = #ident;
            }
        }
    });
    quote!(#command #event)
}
