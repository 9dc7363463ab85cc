//! `#[derive(Command)]`: a command enum's variants, and `IntoCommand` for each wrapped type.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::{Enum, type_name};

pub(crate) fn derive(input: &Enum) -> TokenStream {
    let ident = &input.original.ident;
    // Variants dropped for a mistake already reported still need an arm.
    let rest = (!input.complete).then(|| quote!(_ => ::core::unreachable!(),));

    let names = input.variants.iter().map(|variant| {
        let variant_ident = variant.ident;
        let name = type_name(variant.ty);
        quote!(Self::#variant_ident(_) => #name,)
    });
    // Spanned at the variant's type: a command struct that is not
    // `Serialize` is reported there.
    let encode = input.variants.iter().map(|variant| {
        let variant_ident = variant.ident;
        let ty = variant.ty;
        let call =
            quote_spanned!(ty.span()=> ::cqrs_core::__private::JsonPayload::encode::<#ty>(__command));
        quote!(Self::#variant_ident(__command) => #call,)
    });
    // Each handler lookup is spanned at the variant's type: a command with no
    // handler is reported there, naming the aggregate and the command.
    let dispatch = input.variants.iter().map(|variant| {
        let variant_ident = variant.ident;
        let ty = variant.ty;
        let call = quote_spanned! {ty.span()=>
            match ::cqrs_core::__private::route::<_, #ty>(__aggregate, __command, __context, __services) {
                ::cqrs_core::__private::Decided::Now(__decision) => __decision,
                ::cqrs_core::__private::Decided::Later(__future) => {
                    __future.await.map_err(::cqrs_core::__private::CommandError::Domain)
                }
            }
        };
        quote!(Self::#variant_ident(__command) => #call,)
    });
    let conversions = input.variants.iter().map(|variant| {
        let variant_ident = variant.ident;
        let ty = variant.ty;
        quote! {
            #[automatically_derived]
            impl ::core::convert::From<#ty> for #ident {
                fn from(command: #ty) -> Self {
                    Self::#variant_ident(command)
                }
            }

            #[automatically_derived]
            impl ::cqrs_core::__private::IntoCommand for #ty {
                type Aggregate = <#ident as ::cqrs_core::__private::Dispatch>::Aggregate;

                fn into_command(self) -> #ident {
                    #ident::#variant_ident(self)
                }
            }
        }
    });

    let variants = variant_impls(input);

    quote! {
        #[automatically_derived]
        impl ::cqrs_core::__private::Command for #ident {
            fn name(&self) -> &'static str {
                match self {
                    #(#names)*
                    #rest
                }
            }

            fn encode(
                &self,
            ) -> ::core::result::Result<::cqrs_core::__private::JsonPayload, ::cqrs_core::__private::serde_json::Error> {
                match self {
                    #(#encode)*
                    #rest
                }
            }
        }

        #[automatically_derived]
        impl ::cqrs_core::__private::IntoCommand for #ident {
            type Aggregate = <#ident as ::cqrs_core::__private::Dispatch>::Aggregate;

            fn into_command(self) -> Self {
                self
            }
        }

        #(#conversions)*
        #variants

        #[automatically_derived]
        impl ::cqrs_core::__private::Dispatch for #ident {
            type Aggregate = <Self as ::cqrs_core::__private::CommandOwner>::Aggregate;

            #[inline]
            fn dispatch<'__a>(
                self,
                __aggregate: &'__a Self::Aggregate,
                __context: &'__a ::cqrs_core::__private::CommandContext<'__a>,
                __services: &'__a <Self::Aggregate as ::cqrs_core::__private::Aggregate>::Services,
            ) -> impl ::core::future::Future<
                Output = ::cqrs_core::__private::DecideResult<Self::Aggregate>,
            > + ::core::marker::Send + '__a {
                async move {
                    match self {
                        #(#dispatch)*
                        #rest
                    }
                }
            }
        }
    }
}

/// Which commands the enum wraps, for the check that each
/// `#[command_handler]` takes one; every type when the enum is malformed.
/// An enum used as the event enum by mistake is reported there, so it
/// passes the event check.
fn variant_impls(input: &Enum) -> TokenStream {
    let ident = &input.original.ident;
    let commands = if input.complete {
        let types = input.variants.iter().map(|variant| variant.ty);
        quote! {
            #(
                #[automatically_derived]
                impl ::cqrs_core::__private::CommandVariant<#types> for #ident {}
            )*
        }
    } else {
        quote! {
            #[automatically_derived]
            impl<__C> ::cqrs_core::__private::CommandVariant<__C> for #ident {}
        }
    };
    quote! {
        #commands

        #[automatically_derived]
        impl<__E> ::cqrs_core::__private::EventVariant<__E> for #ident {}
    }
}
