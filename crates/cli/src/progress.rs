//! Progress bars for loading (hidden with `--quiet` or when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ternlight_runtime::weights::LoadProgress;

/// A byte-level progress bar over a weight upload.
pub struct LoadBar(ProgressBar);

impl LoadBar {
    pub fn new(quiet: bool) -> Self {
        let bar = ProgressBar::new(0);
        if quiet {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template("loading {bar:30} {bytes}/{total_bytes} {msg} ({bytes_per_sec}, eta {eta})")
                .expect("valid template"),
        );
        LoadBar(bar)
    }

    pub fn update(&self, p: &LoadProgress) {
        self.0.set_length(p.bytes_total);
        self.0.set_position(p.bytes_done);
        self.0.set_message(format!(
            "{}/{} tensors, {}/{} layers ready",
            p.tensors_done, p.tensors_total, p.layers_ready, p.layers_total
        ));
    }

    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}
