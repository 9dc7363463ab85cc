//! `#[decision_impl]`: a decision's command handler and the events it
//! applies, found by name, and the check that each applied event carries
//! one of its tags.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::{AggregateImpl, Applier, Handler};

pub(crate) fn expand(input: &AggregateImpl) -> TokenStream {
    let private = quote!(::cqrs_core::__private);
    let original = &input.original;
    let self_ty = &original.self_ty;
    let appliers: Vec<(&Applier, &syn::Type)> = input
        .appliers
        .iter()
        .filter_map(|applier| Some((applier, applier.event()?)))
        .collect();
    let applied = appliers.iter().map(|(_, event)| {
        quote! {
            #private::Applied {
                event_name: <#event as #private::EventPayload>::NAME,
                tag_keys: <#event as #private::EventPayload>::TAG_KEYS,
            },
        }
    });
    let apply_arms = appliers.iter().map(|(_, event)| {
        quote! {
            if __name == <#event as #private::EventPayload>::NAME {
                let __event = <<#event as #private::EventPayload>::Event as #private::Event>::decode(
                    __name,
                    __envelope.event_version,
                    &__envelope.payload,
                )?;
                if let ::core::option::Option::Some(__payload) =
                    <#event as #private::EventPayload>::from_event(&__event)
                {
                    <Self as #private::ApplyEvent<#event>>::apply_event(self, __payload);
                }
                return ::core::result::Result::Ok(());
            }
        }
    });
    let checks = appliers.iter().map(|(applier, event)| {
        let body = if applier.valid {
            let method = applier.ident();
            quote!(Self::#method(self, __event))
        } else {
            quote!(::core::unreachable!())
        };
        let message = format!(
            "`{}` carries no #[tag] of this decision, so its query can never select it: \
             tag the event by one of the decision's #[tag] fields (`#[event(tags(..))]` on its variant), or remove this #[apply]",
            crate::ast::type_name(event)
        );
        quote_spanned! {event.span()=>
            // A decision with no tag at all is reported by its derive.
            const _: () = ::core::assert!(
                #private::carries_a_tag(
                    <#event as #private::EventPayload>::TAG_KEYS,
                    <#self_ty as #private::DecisionModel>::TAG_KEYS,
                ) || <#self_ty as #private::DecisionModel>::TAG_KEYS.is_empty(),
                #message
            );

            #[automatically_derived]
            impl #private::ApplyEvent<#event> for #self_ty {
                #[inline]
                fn apply_event(&mut self, __event: &#event) {
                    #body
                }
            }
        }
    });
    let decide = input
        .command_handlers
        .first()
        .filter(|handler| handler.valid)
        .map_or_else(|| quote!(::core::unreachable!()), decide);
    quote! {
        #original

        #[automatically_derived]
        impl #private::DecisionHandlers for #self_ty {
            const APPLIES: &'static [#private::Applied] = &[#(#applied)*];

            fn apply_recorded(
                &mut self,
                __envelope: &#private::Envelope,
            ) -> ::core::result::Result<(), #private::PayloadError> {
                let __name = __envelope.event_name.as_str();
                #(#apply_arms)*
                ::core::result::Result::Ok(())
            }

            fn decide(
                &self,
                __input: <Self as #private::DecisionModel>::Command,
            ) -> ::core::result::Result<
                #private::Decision<<Self as #private::DecisionModel>::Event>,
                <Self as #private::DecisionModel>::Error,
            > {
                #decide
            }
        }

        #(#checks)*
    }
}

/// Calls the command handler and turns what it returns into a decision.
fn decide(handler: &Handler) -> TokenStream {
    let private = quote!(::cqrs_core::__private);
    let Some(output) = &handler.output else {
        return quote!(::core::unreachable!());
    };
    let method = handler.ident();
    let result = quote_spanned!(output.span=> #private::CommandResult::into_result(Self::#method(self, __input)));
    let decision = quote_spanned! {output.events=>
        #private::decision::<<Self as #private::DecisionModel>::Event, _>(__value)
    };
    let error = quote_spanned! {output.error=>
        #private::IntoDomainError::<<Self as #private::DecisionModel>::Error>::into_domain_error(__error)
    };
    quote_spanned! {output.span=>
        match #result {
            ::core::result::Result::Ok(__value) => ::core::result::Result::Ok(#decision),
            ::core::result::Result::Err(__error) => ::core::result::Result::Err(#error),
        }
    }
}
