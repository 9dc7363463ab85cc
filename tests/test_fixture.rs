//! `TestFixture`: given / when / then, and what a failure prints.

use std::panic::{AssertUnwindSafe, catch_unwind};

use cqrs_core::prelude::*;
use cqrs_examples::bank::*;

fn opened() -> AccountEvent {
    AccountOpened {
        owner: "ada".into(),
    }
    .into()
}

#[test]
fn the_contract() {
    TestFixture::<Account>::new()
        .given([
            AccountOpened {
                owner: "ada".into(),
            }
            .into(),
            MoneyDeposited {
                amount: 100,
                balance: 100,
            }
            .into(),
        ])
        .when(WithdrawMoney { amount: 30 })
        .then_expect_events([MoneyWithdrawn {
            amount: 30,
            balance: 70,
        }])
        .then_expect_state(|account| assert_eq!(account.balance, 70));
}

#[test]
fn expects_a_domain_error() {
    TestFixture::<Account>::new()
        .given([opened()])
        .when(WithdrawMoney { amount: 1 })
        .then_expect_error(AccountError::InsufficientFunds {
            balance: 0,
            requested: 1,
        })
        .then_expect_state(|account| assert_eq!(account.balance, 0));
}

#[test]
fn applies_the_create_and_existing_rules() {
    TestFixture::<Account>::new()
        .given_no_events()
        .when(DepositMoney { amount: 1 })
        .then_expect_failure(|error| matches!(error, CommandError::NotFound { .. }));
    TestFixture::<Account>::new()
        .given([opened()])
        .when(OpenAccount {
            owner: "eve".into(),
        })
        .then_expect_failure(|error| {
            matches!(error, CommandError::AlreadyExists { version: 1, .. })
        });
    TestFixture::<Account>::new()
        .given_no_events()
        .when(OpenAccount {
            owner: "eve".into(),
        })
        .then_expect_events([AccountOpened {
            owner: "eve".into(),
        }]);
}

fn panic_message(run: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(run)).expect_err("the assertion should fail");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[test]
fn other_events_fail_with_a_line_diff() {
    let message = panic_message(|| {
        TestFixture::<Account>::new()
            .given([opened()])
            .when(DepositMoney { amount: 5 })
            .then_expect_events([MoneyDeposited {
                amount: 5,
                balance: 6,
            }]);
    });
    assert!(
        message.contains("the command recorded other events than expected"),
        "{message}"
    );
    assert!(message.contains("--- expected\n+++ actual"), "{message}");
    assert!(message.contains("-             balance: 6,"), "{message}");
    assert!(message.contains("+             balance: 5,"), "{message}");
    assert!(message.contains("              amount: 5,"), "{message}");
}

#[test]
fn an_error_where_events_were_expected_fails() {
    let message = panic_message(|| {
        TestFixture::<Account>::new()
            .given([opened()])
            .when(WithdrawMoney { amount: 5 })
            .then_expect_events([MoneyWithdrawn {
                amount: 5,
                balance: 0,
            }]);
    });
    assert!(
        message.contains("but the command failed: insufficient funds"),
        "{message}"
    );
}

#[test]
fn events_where_an_error_was_expected_fail() {
    let message = panic_message(|| {
        TestFixture::<Account>::new()
            .given([opened()])
            .when(DepositMoney { amount: 5 })
            .then_expect_error(AccountError::InsufficientFunds {
                balance: 0,
                requested: 5,
            });
    });
    assert!(message.contains("but it recorded"), "{message}");
}

#[test]
fn another_error_fails_with_a_diff() {
    let message = panic_message(|| {
        TestFixture::<Account>::new()
            .given([opened()])
            .when(WithdrawMoney { amount: 5 })
            .then_expect_error(AccountError::InsufficientFunds {
                balance: 0,
                requested: 6,
            });
    });
    assert!(message.contains("-     requested: 6,"), "{message}");
    assert!(message.contains("+     requested: 5,"), "{message}");
}
