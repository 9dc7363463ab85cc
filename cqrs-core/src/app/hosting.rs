//! Which domains an app hosts: whose aggregates take its commands, whose
//! processors and event handlers it runs, and whose services it needs.

use std::any::TypeId;
use std::collections::BTreeSet;

use super::BuildError;
use crate::registry::{DomainRegistration, Registry, innermost};

/// The domains an app hosts, decided at `build()`.
#[derive(Debug)]
pub(crate) struct Hosting {
    /// The modules of the domains named with `host`; `None` when the app
    /// named none and hosts everything.
    named: Option<Vec<&'static str>>,
    /// Every domain of the program.
    domains: Vec<&'static DomainRegistration>,
    /// The aggregates of domains it does not host, with their domain.
    elsewhere: foldhash::HashMap<TypeId, &'static str>,
    /// The domains of the registered processors and handlers it runs.
    running: BTreeSet<&'static str>,
}

impl Hosting {
    pub(crate) fn new(registry: &Registry, named: Vec<&'static str>) -> Self {
        let named = (!named.is_empty()).then_some(named);
        let domains = registry.domains().to_vec();
        let mut hosting = Self {
            named,
            domains,
            elsewhere: foldhash::HashMap::default(),
            running: BTreeSet::new(),
        };
        for aggregate in registry.aggregates() {
            if !hosting.hosts(aggregate.module)
                && let Some(domain) = hosting.domain_of(aggregate.module)
            {
                hosting.elsewhere.insert((aggregate.type_id)(), domain);
            }
        }
        hosting
    }

    /// The name of the innermost domain that covers `module`.
    fn domain_of(&self, module: &str) -> Option<&'static str> {
        innermost(&self.domains, module).map(|domain| domain.name)
    }

    /// Whether what is declared in `module` is hosted.
    pub(crate) fn hosts(&self, module: &str) -> bool {
        let Some(named) = &self.named else {
            return true;
        };
        innermost(&self.domains, module).is_none_or(|domain| named.contains(&domain.module))
    }

    /// Notes that a processor or handler declared in `module` runs.
    pub(crate) fn runs(&mut self, module: &str) {
        if let Some(domain) = self.domain_of(module) {
            self.running.insert(domain);
        }
    }

    /// The domain aggregate `type_id` belongs to, if the app does not host it.
    pub(crate) fn domain_elsewhere(&self, type_id: TypeId) -> Option<&'static str> {
        self.elsewhere.get(&type_id).copied()
    }

    /// Refuses an app that names no domain and would run the processors
    /// of two domains or more.
    pub(crate) fn check(&self) -> Result<(), BuildError> {
        if self.named.is_none() && self.running.len() > 1 {
            return Err(not_named(self.running.iter().copied()));
        }
        Ok(())
    }

    /// Refuses an app without the services of an aggregate it hosts;
    /// `given` says whether it has those of an aggregate type.
    pub(crate) fn check_services(
        &self,
        registry: &Registry,
        given: impl Fn(TypeId) -> bool,
    ) -> Result<(), BuildError> {
        for aggregate in registry.aggregates() {
            if let Some(services) = aggregate.services
                && self.hosts(aggregate.module)
                && !given((aggregate.type_id)())
            {
                return Err(BuildError::MissingServices {
                    aggregate: aggregate.name,
                    rust_type: aggregate.rust_type,
                    services,
                });
            }
        }
        Ok(())
    }

    /// Refuses to receive another service's events into an app that names
    /// no domain, in a program that declares domains.
    pub(crate) fn check_receiving(&self) -> Result<(), BuildError> {
        if self.named.is_none() && !self.domains.is_empty() {
            return Err(not_named(self.domains.iter().map(|domain| domain.name)));
        }
        Ok(())
    }
}

/// The error naming the domains an app would host without saying so.
fn not_named(domains: impl Iterator<Item = &'static str>) -> BuildError {
    let mut domains: Vec<String> = domains.map(|name| format!("`{name}`")).collect();
    domains.sort();
    domains.dedup();
    BuildError::DomainsNotNamed { domains }
}
