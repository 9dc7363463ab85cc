//! What a gateway publishes and a consumer receives, checked against the
//! aggregates and events the program registered: a name or a binding
//! pattern that selects nothing is an error when the app or the consumer
//! is built, naming the closest known name, instead of a service that
//! silently publishes or receives nothing.

use crate::registry::{Registry, SelectionKind, UnknownSelection};

/// How a broker's binding patterns spell their wildcards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Wildcards {
    /// AMQP topics (RabbitMQ): `*` one word, `#` any number of words.
    Amqp,
    /// NATS subjects: `*` one token, a final `>` one or more tokens.
    Nats,
}

/// Checks names given as strings: each must be a registered aggregate type
/// or event name, or a pattern (in `wildcards`) matching the routing key of
/// one.
pub(crate) fn check(
    owner: &str,
    kind: SelectionKind,
    names: &[String],
    wildcards: Wildcards,
) -> Result<(), UnknownSelection> {
    if names.is_empty() {
        return Ok(());
    }
    let registry = Registry::global();
    let known: Vec<String> = match kind {
        SelectionKind::AggregateType => registry
            .aggregates()
            .iter()
            .map(|aggregate| aggregate.name.to_owned())
            .collect(),
        SelectionKind::Event => registry
            .events()
            .iter()
            .flat_map(|events| events.types.iter().map(|event| event.name.to_owned()))
            .collect(),
        SelectionKind::Binding => routing_keys(&registry),
    };
    for name in names {
        let found = match kind {
            SelectionKind::Binding => known.iter().any(|key| matches(name, key, wildcards)),
            _ => known.iter().any(|known| known == name),
        };
        if !found {
            return Err(UnknownSelection {
                owner: owner.to_owned(),
                kind,
                name: name.clone(),
                closest: closest(name, known.iter().map(String::as_str)).map(str::to_owned),
            });
        }
    }
    Ok(())
}

/// Every registered aggregate with each event it records, as (aggregate
/// type, event name): the routing keys `<aggregate type>.<event name>`.
fn routes(registry: &Registry) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
    registry.aggregates().iter().flat_map(|aggregate| {
        aggregate
            .events()
            .iter()
            .map(|event| (aggregate.name, event.name))
    })
}

/// `<aggregate type>.<event name>` of every event a registered aggregate records.
fn routing_keys(registry: &Registry) -> Vec<String> {
    routes(registry)
        .map(|(aggregate, event)| format!("{aggregate}.{event}"))
        .collect()
}

/// What a typed selection of the event stored as `event` binds: the
/// routing key `<aggregate type>.<event name>` of each registered aggregate
/// that records it; the bare name when none does, which `Consumer::new`
/// then refuses, naming it.
#[cfg(any(feature = "rabbitmq", feature = "nats"))]
pub(crate) fn event_bindings(event: &str) -> Vec<String> {
    let keys: Vec<String> = routes(&Registry::global())
        .filter(|&(_, recorded)| recorded == event)
        .map(|(aggregate, recorded)| format!("{aggregate}.{recorded}"))
        .collect();
    if keys.is_empty() {
        vec![event.to_owned()]
    } else {
        keys
    }
}

/// Whether a pattern selects `key`, both split at dots: `*` is one word;
/// with AMQP wildcards `#` is any number of words, with NATS ones a final
/// `>` is one or more. The other broker's wildcard is a literal word.
pub(crate) fn matches(pattern: &str, key: &str, wildcards: Wildcards) -> bool {
    fn words(pattern: &[&str], key: &[&str], wildcards: Wildcards) -> bool {
        match (pattern.split_first(), key.split_first()) {
            (None, None) => true,
            (Some((&"#", rest)), _) if wildcards == Wildcards::Amqp => {
                words(rest, key, wildcards)
                    || key
                        .split_first()
                        .is_some_and(|(_, tail)| words(pattern, tail, wildcards))
            }
            (Some((&">", [])), Some(_)) if wildcards == Wildcards::Nats => true,
            (Some((&"*", rest)), Some((_, tail))) => words(rest, tail, wildcards),
            (Some((word, rest)), Some((first, tail))) => {
                word == first && words(rest, tail, wildcards)
            }
            _ => false,
        }
    }
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = key.split('.').collect();
    words(&pattern, &key, wildcards)
}

/// The known name nearest to `name` by edit distance (case differences
/// count half), if any is near enough to be a typo of it.
fn closest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|candidate| (distance(name, candidate), candidate))
        // At most one edit for every two characters, counted in half steps.
        .filter(|&(distance, candidate)| distance <= candidate.len().max(name.len()))
        .min_by_key(|&(distance, candidate)| (distance, candidate))
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance in half steps: a change of case alone costs 1,
/// any other edit 2.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).map(|n| n * 2).collect();
    for (i, x) in a.chars().enumerate() {
        let mut current = vec![(i + 1) * 2; b.len() + 1];
        for (j, &y) in b.iter().enumerate() {
            let change = if x == y {
                0
            } else if x.eq_ignore_ascii_case(&y) {
                1
            } else {
                2
            };
            current[j + 1] = (previous[j] + change)
                .min(previous[j + 1] + 2)
                .min(current[j] + 2);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::Wildcards::{Amqp, Nats};
    use super::{closest, matches};

    #[test]
    fn patterns_match_as_the_brokers_do() {
        for wildcards in [Amqp, Nats] {
            assert!(matches("Order.OrderPlaced", "Order.OrderPlaced", wildcards));
            assert!(matches("Order.*", "Order.OrderPlaced", wildcards));
            assert!(!matches("Order.*", "Order", wildcards));
            assert!(!matches(
                "Order.OrderPlaced",
                "Order.OrderShipped",
                wildcards
            ));
            assert!(!matches(
                "*.OrderPlaced",
                "shop.order.OrderPlaced",
                wildcards
            ));
        }
        assert!(matches(
            "shop.order.#",
            "shop.order.shop.order.placed",
            Amqp
        ));
        assert!(matches("shop.order.#", "shop.order", Amqp));
        assert!(matches("#.placed", "shop.order.shop.order.placed", Amqp));
        assert!(matches("#", "a.b", Amqp));
        assert!(
            !matches("shop.>", "shop.order.placed", Amqp),
            "`>` is a word to RabbitMQ"
        );
        assert!(matches("shop.>", "shop.order.placed", Nats));
        assert!(!matches("shop.>", "shop", Nats));
        assert!(
            !matches("shop.#", "shop.order", Nats),
            "`#` is a word to NATS"
        );
    }

    #[test]
    fn the_closest_name_is_a_likely_typo() {
        let known = ["Room", "Booking", "Payment"];
        assert_eq!(closest("room", known.into_iter()), Some("Room"));
        assert_eq!(closest("Bokking", known.into_iter()), Some("Booking"));
        assert_eq!(closest("zzzzzzzzzzzzzzzzzz", known.into_iter()), None);
    }
}
