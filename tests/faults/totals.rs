//! The projection every child runs: how many events of each account it
//! applied and the last position, so the suite sees an event applied twice
//! or never.

use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

use cqrs_examples::bank::{AccountOpened, MoneyDeposited};

pub const TOTALS: &str = "faults.totals";

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Totals {
    pub events: u64,
    pub last_position: u64,
}

#[projection(name = "faults.totals")]
impl Totals {
    #[event_handler]
    async fn opened(
        _: &AccountOpened,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        count(envelope, views).await
    }

    #[event_handler]
    async fn deposited(
        _: &MoneyDeposited,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        count(envelope, views).await
    }
}

async fn count(envelope: &Envelope, views: &mut Views<'_, Totals>) -> Result<(), ViewError> {
    let totals = views.get_or_default(&envelope.aggregate_id).await?;
    totals.events += 1;
    totals.last_position = envelope.position;
    Ok(())
}
