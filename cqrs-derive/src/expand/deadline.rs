//! `#[derive(Deadline)]`: the name and version a deadline's value is stored
//! under.

use proc_macro2::TokenStream;
use quote::quote;

use crate::ast::DeadlineType;

pub(crate) fn derive(input: &DeadlineType) -> TokenStream {
    let ident = &input.original.ident;
    let name = input.stored_name();
    let version = input.version();
    quote! {
        #[automatically_derived]
        impl ::cqrs_core::__private::Deadline for #ident {
            const NAME: &'static str = #name;
            const VERSION: u32 = #version;
        }
    }
}
