//! Events an inbox received, which no log holds: handed straight to the
//! process managers and event handlers that take them, with no segment and
//! no checkpoint; the inbox records which messages it handled.

use tracing::Instrument;

use super::{ProcessorError, ProcessorKind, Processors};
use crate::envelope::Envelope;

impl Processors {
    /// The names of the processors an inbox can hand events to: the process
    /// managers and event handlers.
    pub(crate) fn receivers(&self) -> Vec<&'static str> {
        self.shared
            .runners
            .iter()
            .filter(|runner| {
                matches!(
                    runner.processor.kind(),
                    ProcessorKind::ProcessManager | ProcessorKind::EventHandler
                )
            })
            .map(|runner| runner.name())
            .collect()
    }

    /// Hands `envelope`, received by an inbox, to processor `name`: `None`
    /// if it takes no event of that name.
    pub(crate) async fn receive(
        &self,
        name: &str,
        envelope: &Envelope,
    ) -> Option<Result<(), ProcessorError>> {
        let runner = self.shared.runner(name).ok()?;
        let env = self.shared.env();
        let handling = crate::telemetry::handling(runner.name(), envelope);
        let delivered = runner.processor.receive(&env, envelope)?;
        Some(delivered.instrument(handling).await)
    }
}
