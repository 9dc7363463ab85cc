//! `#[derive(Indexed)]`: a view type's declared indexes, the typed handle
//! of each declared field, the keys a view is indexed by, and the
//! registration a projection's batch finds them through.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};

use crate::ast::IndexedType;

pub(crate) fn derive(input: &IndexedType) -> TokenStream {
    let view = &input.original.ident;
    let vis = &input.original.vis;
    let fields_type = format_ident!("{}Fields", view);
    let private = quote!(::cqrs_core::__private);
    let types: Vec<(&syn::Ident, &syn::Type)> = input
        .declared()
        .into_iter()
        .filter_map(|declared| {
            let field = input
                .fields()
                .into_iter()
                .find(|field| field.ident.as_ref() == Some(declared))?;
            Some((declared, &field.ty))
        })
        .collect();
    let handles = types
        .iter()
        .map(|(field, ty)| quote!(#vis #field: #private::Field<#view, #ty>));
    let constructed = types.iter().map(|(field, _)| {
        let name = field.to_string();
        quote!(#field: #private::Field::new(#name))
    });
    // Spanned at the field as the index names it: a type that cannot be a
    // key is reported there.
    let kind = |field: &syn::Ident| {
        let ty = types
            .iter()
            .find(|(declared, _)| *declared == field)
            .map(|(_, ty)| *ty);
        quote_spanned!(field.span()=> <#ty as ::cqrs_core::__private::IndexKey>::KIND)
    };
    let indexes = input.indexes.iter().map(|index| {
        let entries = index.iter().map(|field| {
            let name = field.to_string();
            let kind = kind(field);
            quote!((#name, #kind))
        });
        quote!(#private::Index { fields: &[#(#entries),*] })
    });
    // Through the field's type, as `kind` is: a type that is no key is one
    // error, at the type.
    let keys = types.iter().map(|(field, ty)| {
        let name = field.to_string();
        quote!((#name, <#ty as #private::IndexKey>::key(&self.#field)?))
    });
    let doc = format!("The declared fields of `{view}`, to filter and order its queries by.");
    quote! {
        #[doc = #doc]
        #[derive(Clone, Copy, Debug)]
        #vis struct #fields_type {
            #(
                #[allow(missing_docs)]
                #handles,
            )*
        }

        #[automatically_derived]
        impl #private::Indexed for #view {
            type Fields = #fields_type;

            const FIELDS: #fields_type = #fields_type { #(#constructed),* };

            const INDEXES: &'static [#private::Index] = &[#(#indexes),*];

            fn keys(&self) -> ::core::result::Result<
                ::std::vec::Vec<(&'static str, #private::KeyValue)>,
                #private::KeyError,
            > {
                ::core::result::Result::Ok(::std::vec![#(#keys),*])
            }
        }

        const _: () = {
            #private::inventory::submit! {
                #private::IndexRegistration::of::<#view>()
            }
        };
    }
}
