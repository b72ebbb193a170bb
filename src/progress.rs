//! Progress reporting: one bar per layer (bytes and rate) when stderr is a
//! terminal, plain log lines otherwise, so logs of a systemd unit or CI run
//! stay readable.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where progress goes for one command.
#[derive(Clone)]
pub struct Progress {
    bars: Option<MultiProgress>,
}

impl Progress {
    /// Bars on an interactive stderr unless `quiet`; log lines otherwise.
    pub fn new(quiet: bool) -> Self {
        let bars = (!quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress { bars }
    }

    /// No bars, only log lines.
    pub fn plain() -> Self {
        Progress { bars: None }
    }

    /// Starts reporting one transfer of `total` bytes, labelled `label`.
    pub fn transfer(&self, label: String, total: u64) -> LayerProgress {
        let bar = self.bars.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>20} [{bar:30}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} {msg}",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            bar.set_prefix(label.clone());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        LayerProgress {
            bar,
            label,
            total,
            start: Instant::now(),
        }
    }
}

/// Progress of one blob transfer.
pub struct LayerProgress {
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    start: Instant,
}

impl LayerProgress {
    pub fn set_position(&self, pos: u64) {
        if let Some(b) = &self.bar {
            b.set_position(pos);
        }
    }

    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// Ends the report: `transferred` bytes came over the network (0 when cached).
    pub fn finish(&self, transferred: u64) {
        let what = if transferred == 0 { "cached" } else { "done" };
        match &self.bar {
            Some(b) => b.finish_with_message(what),
            None if transferred > 0 => {
                let secs = self.start.elapsed().as_secs_f64();
                tracing::info!(
                    "fetched {} ({} in {:.2}s, {}/s)",
                    self.label,
                    human_bytes(self.total),
                    secs,
                    human_bytes((transferred as f64 / secs.max(1e-3)) as u64)
                );
            }
            None => tracing::debug!("{} already cached", self.label),
        }
    }
}

/// `1.5 MiB`-style sizes for people.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(300 << 20), "300.0 MiB");
    }
}
