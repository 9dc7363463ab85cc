//! [`Domain`]: a bounded context, the module that declares it and its
//! submodules, which an app hosts as a whole.

/// A bounded context: the aggregates, projections, process managers and
/// event handlers declared in one module and its submodules.
///
/// `#[derive(Domain)]` on a unit struct makes the module it is declared in
/// a domain. An app names the domains it hosts with
/// [`CqrsBuilder::host`](crate::CqrsBuilder::host); it then runs the
/// processors of those domains only, accepts commands for their aggregates
/// only, and asks services only for them. Registrations outside every
/// domain (a program's own `main.rs`, say) are always hosted. A domain
/// declared inside another one's module is a domain of its own: hosting the
/// outer one does not host it.
///
/// A program that declares no domain needs none of this: its app hosts
/// everything, as `Cqrs::new(store)` does.
///
/// # Examples
///
/// ```
/// mod billing {
///     use cqrs_core::Domain;
///
///     /// Invoices and their payments.
///     #[derive(Domain)]
///     pub struct Billing;
/// }
///
/// let app = cqrs_core::Cqrs::builder(cqrs_core::MemoryStore::new())
///     .host::<billing::Billing>()
///     .build()?;
/// # Ok::<_, cqrs_core::BuildError>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a domain",
    label = "not a domain",
    note = "add `#[derive(Domain)]` to a unit struct in the domain's module"
)]
pub trait Domain: 'static {
    /// The marker type's name, as errors show it.
    const NAME: &'static str;
    /// The module the domain covers, with its submodules (`module_path!()`
    /// where the marker is declared).
    const MODULE: &'static str;
}

/// Whether `module` is `domain` or one of its submodules.
pub(crate) fn covers(domain: &str, module: &str) -> bool {
    module
        .strip_prefix(domain)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn a_domain_covers_its_module_and_submodules_only() {
        assert!(covers("app::billing", "app::billing"));
        assert!(covers("app::billing", "app::billing::invoice"));
        assert!(!covers("app::billing", "app::billing_v2"));
        assert!(!covers("app::billing", "app"));
    }
}
