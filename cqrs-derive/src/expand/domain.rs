//! `#[derive(Domain)]`: the module of a unit struct becomes a domain, and
//! the registry learns of it.

use proc_macro2::TokenStream;
use quote::quote;

pub(crate) fn derive(ident: &syn::Ident) -> TokenStream {
    let name = ident.to_string();
    quote! {
        #[automatically_derived]
        impl ::cqrs_core::__private::Domain for #ident {
            const NAME: &'static str = #name;
            const MODULE: &'static str = ::core::module_path!();
        }

        const _: () = {
            ::cqrs_core::__private::inventory::submit! {
                ::cqrs_core::__private::DomainRegistration {
                    name: #name,
                    module: ::core::module_path!(),
                }
            }
        };
    }
}
