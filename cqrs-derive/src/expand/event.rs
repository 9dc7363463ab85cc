//! `#[derive(Event)]`: stored names and versions, encoding, decoding and upcasts.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::{Enum, type_name};

pub(crate) fn derive(input: &Enum) -> TokenStream {
    let ident = &input.original.ident;
    let private = quote!(::cqrs_core::__private);
    // Variants dropped for a mistake already reported still need an arm.
    let rest = (!input.complete).then(|| quote!(_ => ::core::unreachable!(),));

    let types = input.variants.iter().map(|variant| {
        let name = variant.stored_name();
        let version = variant.version();
        let payload = type_name(variant.ty);
        let upcasts = variant.event.upcasts.iter().map(|upcast| upcast.version);
        quote! {
            #private::EventType {
                name: #name,
                version: #version,
                payload: #payload,
                upcasts: &[#(#upcasts),*],
            },
        }
    });
    let event_types = input.variants.iter().enumerate().map(|(index, variant)| {
        let variant_ident = variant.ident;
        quote!(Self::#variant_ident(_) => &<Self as #private::Event>::TYPES[#index],)
    });
    let encode = input.variants.iter().map(|variant| {
        let variant_ident = variant.ident;
        let ty = variant.ty;
        let call = quote_spanned!(ty.span()=> #private::JsonPayload::encode::<#ty>(__event));
        quote!(Self::#variant_ident(__event) => #call,)
    });
    let decode = input.variants.iter().map(|variant| {
        let variant_ident = variant.ident;
        let ty = variant.ty;
        let name = variant.stored_name();
        let version = variant.version();
        let payload = type_name(ty);
        let call = quote_spanned!(ty.span()=> #private::decode_payload::<#ty>(__payload, #payload));
        let upcasts = variant.event.upcasts.iter().map(|upcast| {
            let old = &upcast.ty;
            let old_version = upcast.version;
            let old_name = type_name(old);
            let decode =
                quote_spanned!(old.span()=> #private::decode_payload::<#old>(__payload, #old_name));
            let convert = quote_spanned!(old.span()=> #private::upcast::<#old, #ty>(__old));
            quote!((#name, #old_version) => #decode.map(|__old| Self::#variant_ident(#convert)),)
        });
        quote! {
            (#name, #version) => #call.map(Self::#variant_ident),
            #(#upcasts)*
        }
    });
    // Spanned at each variant's type: an event with no #[apply] is reported
    // there, naming the aggregate and the event.
    let apply = input.variants.iter().map(|variant| {
        let variant_ident = variant.ident;
        let ty = variant.ty;
        let call = quote_spanned!(ty.span()=> #private::apply::<_, #ty>(__aggregate, __event));
        quote!(Self::#variant_ident(__event) => #call,)
    });
    let payloads = input.variants.iter().map(|variant| {
        let variant_ident = variant.ident;
        let ty = variant.ty;
        let name = variant.stored_name();
        let version = variant.version();
        let other = (input.variants.len() > 1 || !input.complete)
            .then(|| quote!(_ => ::core::option::Option::None,));
        let tag_keys = variant.event.tags.iter().map(ToString::to_string);
        quote! {
            #[automatically_derived]
            impl #private::EventPayload for #ty {
                type Event = #ident;
                const NAME: &'static str = #name;
                const VERSION: u32 = #version;
                const TAG_KEYS: &'static [&'static str] = &[#(#tag_keys),*];

                #[inline]
                fn from_event(event: &#ident) -> ::core::option::Option<&Self> {
                    match event {
                        #ident::#variant_ident(payload) => ::core::option::Option::Some(payload),
                        #other
                    }
                }
            }

            #[automatically_derived]
            impl ::core::convert::From<#ty> for #ident {
                #[inline]
                fn from(event: #ty) -> Self {
                    Self::#variant_ident(event)
                }
            }

            #[automatically_derived]
            impl #private::IntoEvent<#ident> for #ty {
                #[inline]
                fn into_event(self) -> #ident {
                    #ident::#variant_ident(self)
                }
            }

            #[automatically_derived]
            impl #private::IntoDecision<#ident> for #ty {
                #[inline]
                fn into_decision(self, __decision: &mut #private::Decision<#ident>) {
                    __decision.events.push(#ident::#variant_ident(self));
                }
            }
        }
    });
    let rust_type = ident.to_string();

    let variants = variant_impls(input);
    let tags = tags(input);
    quote! {
        #[automatically_derived]
        impl #private::Event for #ident {
            const TYPES: &'static [#private::EventType] = &[#(#types)*];

            fn event_type(&self) -> &'static #private::EventType {
                match self {
                    #(#event_types)*
                    #rest
                }
            }

            fn encode(&self) -> ::core::result::Result<#private::JsonPayload, #private::serde_json::Error> {
                match self {
                    #(#encode)*
                    #rest
                }
            }

            fn decode(
                __name: &str,
                __version: u32,
                __payload: &#private::JsonPayload,
            ) -> ::core::result::Result<Self, #private::PayloadError> {
                #[allow(unreachable_patterns)]
                match (__name, __version) {
                    #(#decode)*
                    _ => ::core::result::Result::Err(#private::unknown_event(
                        __name,
                        __version,
                        <Self as #private::Event>::TYPES,
                    )),
                }
            }

            #tags
        }

        #[automatically_derived]
        impl #private::ApplyTo for #ident {
            type Aggregate = <Self as #private::EventOwner>::Aggregate;

            #[inline]
            fn apply_to(&self, __aggregate: &mut Self::Aggregate) {
                match self {
                    #(#apply)*
                    #rest
                }
            }
        }

        #(#payloads)*
        #variants

        const _: () = {
            #private::inventory::submit! {
                #private::EventRegistration {
                    rust_type: ::core::concat!(::core::module_path!(), "::", #rust_type),
                    types: <#ident as #private::Event>::TYPES,
                }
            }
        };
    }
}

/// Which events the enum wraps, for the check that each `#[apply]` takes
/// one; every type when the enum is malformed. An enum used as the command
/// enum by mistake is reported there, so it passes the command check.
fn variant_impls(input: &Enum) -> TokenStream {
    let ident = &input.original.ident;
    let events = if input.complete {
        let types = input.variants.iter().map(|variant| variant.ty);
        quote! {
            #(
                #[automatically_derived]
                impl ::cqrs_core::__private::EventVariant<#types> for #ident {}
            )*
        }
    } else {
        quote! {
            #[automatically_derived]
            impl<__E> ::cqrs_core::__private::EventVariant<__E> for #ident {}
        }
    };
    quote! {
        #events

        #[automatically_derived]
        impl<__C> ::cqrs_core::__private::CommandVariant<__C> for #ident {}
    }
}

/// `Event::tags` from each variant's `tags(..)` fields, and a check that a
/// tag two variants share is a field of one type in both; nothing when no
/// variant is tagged.
fn tags(input: &Enum) -> TokenStream {
    let private = quote!(::cqrs_core::__private);
    if input
        .variants
        .iter()
        .all(|variant| variant.event.tags.is_empty())
    {
        return TokenStream::new();
    }
    let arms = input.variants.iter().map(|variant| {
        let variant_ident = variant.ident;
        let tags = variant.event.tags.iter().map(|field| {
            let key = field.to_string();
            quote_spanned!(field.span()=> #private::tag(#key, &__event.#field)?)
        });
        quote!(Self::#variant_ident(__event) => ::core::result::Result::Ok(::std::vec![#(#tags),*]),)
    });
    let rest =
        (!input.complete).then(|| quote!(_ => ::core::result::Result::Ok(::std::vec::Vec::new()),));
    // Two variants tagged by the same field: its two types must agree, or
    // their tags would not compare as one value.
    let mut same_types = Vec::new();
    for (index, first) in input.variants.iter().enumerate() {
        for second in &input.variants[index + 1..] {
            for field in &second.event.tags {
                if first.event.tags.contains(field) {
                    let (a, b) = (first.ty, second.ty);
                    same_types.push(quote_spanned! {field.span()=>
                        const _: fn(&#a, &#b) = |__first, __second| {
                            let _ = [&__first.#field, &__second.#field];
                        };
                    });
                }
            }
        }
    }
    quote! {
        fn tags(&self) -> ::core::result::Result<::std::vec::Vec<#private::Tag>, #private::InvalidTag> {
            #(#same_types)*
            #[allow(unreachable_patterns)]
            match self {
                #(#arms)*
                #rest
            }
        }
    }
}
