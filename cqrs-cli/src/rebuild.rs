//! [`rebuild`]: a projection emptied and built again from the log, with a
//! progress bar on the terminal.

use std::time::Duration;

use cqrs_core::Cqrs;
use cqrs_core::processor::{ProcessorsError, RebuildProgress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Empties projection `projection` of `app` and builds it again from the
/// log on this process, drawing a bar on stderr (when it is a terminal):
/// events done of the log's total, rate, time left. Stop the app's other
/// instances' processors first: segments a live node holds make it fail.
pub async fn rebuild(app: &Cqrs, projection: &str) -> Result<RebuildProgress, ProcessorsError> {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} events, {per_sec}, {eta} left",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("rebuilding {projection}"));
    bar.enable_steady_tick(Duration::from_millis(200));
    let done = app
        .processors()
        .rebuild_named(projection, |progress| {
            bar.set_length(progress.total);
            bar.set_position(progress.done);
        })
        .await;
    match &done {
        Ok(_) => bar.finish(),
        Err(_) => bar.abandon(),
    }
    done
}
