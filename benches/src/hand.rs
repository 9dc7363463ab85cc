//! The same account as `ours`, with `Aggregate` and the enums written by hand:
//! a `match` instead of the generated routing, for the macros' cost.

use cqrs_core::registry::EventType;
use cqrs_core::{
    Aggregate, Command, CommandContext, CommandError, Decision, Event, JsonPayload, PayloadError,
};

use cqrs_examples::bank::{
    AccountError, AccountOpened, DepositMoney, MoneyDeposited, MoneyWithdrawn, OpenAccount,
    WithdrawMoney,
};

#[derive(Debug, Clone)]
pub enum HandCommand {
    Open(OpenAccount),
    Deposit(DepositMoney),
    Withdraw(WithdrawMoney),
}

impl Command for HandCommand {
    fn name(&self) -> &'static str {
        match self {
            Self::Open(_) => "OpenAccount",
            Self::Deposit(_) => "DepositMoney",
            Self::Withdraw(_) => "WithdrawMoney",
        }
    }

    fn encode(&self) -> Result<JsonPayload, serde_json::Error> {
        match self {
            Self::Open(command) => JsonPayload::encode(command),
            Self::Deposit(command) => JsonPayload::encode(command),
            Self::Withdraw(command) => JsonPayload::encode(command),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum HandEvent {
    Opened(AccountOpened),
    Deposited(MoneyDeposited),
    Withdrawn(MoneyWithdrawn),
}

const TYPES: &[EventType] = &[
    EventType {
        name: "hand.opened",
        version: 1,
        payload: "AccountOpened",
        upcasts: &[],
    },
    EventType {
        name: "hand.deposited",
        version: 1,
        payload: "MoneyDeposited",
        upcasts: &[],
    },
    EventType {
        name: "hand.withdrawn",
        version: 1,
        payload: "MoneyWithdrawn",
        upcasts: &[],
    },
];

impl Event for HandEvent {
    const TYPES: &'static [EventType] = TYPES;

    fn event_type(&self) -> &'static EventType {
        match self {
            Self::Opened(_) => &TYPES[0],
            Self::Deposited(_) => &TYPES[1],
            Self::Withdrawn(_) => &TYPES[2],
        }
    }

    fn encode(&self) -> Result<JsonPayload, serde_json::Error> {
        match self {
            Self::Opened(event) => JsonPayload::encode(event),
            Self::Deposited(event) => JsonPayload::encode(event),
            Self::Withdrawn(event) => JsonPayload::encode(event),
        }
    }

    fn decode(name: &str, version: u32, payload: &JsonPayload) -> Result<Self, PayloadError> {
        let invalid = |rust_type| move |source| PayloadError::Invalid { rust_type, source };
        match (name, version) {
            ("hand.opened", 1) => payload
                .decode()
                .map(Self::Opened)
                .map_err(invalid("AccountOpened")),
            ("hand.deposited", 1) => payload
                .decode()
                .map(Self::Deposited)
                .map_err(invalid("MoneyDeposited")),
            ("hand.withdrawn", 1) => payload
                .decode()
                .map(Self::Withdrawn)
                .map_err(invalid("MoneyWithdrawn")),
            _ => Err(PayloadError::UnknownName {
                name: name.to_owned(),
            }),
        }
    }
}

#[derive(Debug, Default)]
pub struct HandAccount {
    pub owner: String,
    pub balance: u64,
}

impl Aggregate for HandAccount {
    const NAME: &'static str = "hand.account";
    type Command = HandCommand;
    type Event = HandEvent;
    type Error = AccountError;
    type Services = ();

    fn initial() -> Self {
        Self::default()
    }

    async fn handle(
        &self,
        command: HandCommand,
        context: &CommandContext<'_>,
        _: &(),
    ) -> Result<Decision<HandEvent>, CommandError<AccountError>> {
        let creates = matches!(command, HandCommand::Open(_));
        if creates && context.version > 0 {
            return Err(CommandError::AlreadyExists {
                aggregate_type: Self::NAME,
                aggregate_id: context.aggregate_id.to_owned(),
                version: context.version,
            });
        }
        if !creates && context.version == 0 {
            return Err(CommandError::NotFound {
                aggregate_type: Self::NAME,
                aggregate_id: context.aggregate_id.to_owned(),
            });
        }
        match command {
            HandCommand::Open(command) => {
                Ok(Decision::from(vec![HandEvent::Opened(AccountOpened {
                    owner: command.owner,
                })]))
            }
            HandCommand::Deposit(command) => {
                Ok(Decision::from(vec![HandEvent::Deposited(MoneyDeposited {
                    amount: command.amount,
                    balance: self.balance + command.amount,
                })]))
            }
            HandCommand::Withdraw(command) => {
                if command.amount > self.balance {
                    return Err(CommandError::Domain(AccountError::InsufficientFunds {
                        balance: self.balance,
                        requested: command.amount,
                    }));
                }
                Ok(Decision::from(vec![HandEvent::Withdrawn(MoneyWithdrawn {
                    amount: command.amount,
                    balance: self.balance - command.amount,
                })]))
            }
        }
    }

    fn apply(&mut self, event: &HandEvent) {
        match event {
            HandEvent::Opened(event) => self.owner.clone_from(&event.owner),
            HandEvent::Deposited(event) => self.balance = event.balance,
            HandEvent::Withdrawn(event) => self.balance = event.balance,
        }
    }
}
