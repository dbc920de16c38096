//! The reader-state detector behind the page's adaptive UI (after "Orchestrating Attention" / AttentionGuard):
//! four states read from interaction signals only, on the device, over a rolling 30-second window. The rules are
//! few and written out in [`classify`] so the observer panel can show why a state was chosen; [`Detector::tick`]
//! adds hysteresis so the state does not flicker.

use std::collections::VecDeque;

/// Seconds of interaction history the features are computed over.
pub const WINDOW: f64 = 30.0;
/// Consecutive ticks a new classification must hold before the state changes.
pub const HOLD_TICKS: u32 = 3;

/// What the reader seems to be doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReaderState {
    /// Steady, moderate interaction.
    Focused,
    /// Attention elsewhere: long idle, tab switches, aimless scrolling back and forth.
    Drifting,
    /// Sustained, fast, steady interaction without breaks.
    Hyperfocused,
    /// Slowing typing, many corrections.
    Fatigued,
}

impl ReaderState {
    /// Every state, in display order.
    pub const ALL: [ReaderState; 4] =
        [ReaderState::Focused, ReaderState::Drifting, ReaderState::Hyperfocused, ReaderState::Fatigued];

    /// The lower-case name the page and its tests use.
    pub fn name(self) -> &'static str {
        match self {
            ReaderState::Focused => "focused",
            ReaderState::Drifting => "drifting",
            ReaderState::Hyperfocused => "hyperfocused",
            ReaderState::Fatigued => "fatigued",
        }
    }

    /// The state called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// What the page does in this state (the adaptation patterns).
    pub fn adaptation(self) -> &'static str {
        match self {
            ReaderState::Focused => "standard layout, tokens shown as they come",
            ReaderState::Drifting => "curiosity hook and a recap of where you were",
            ReaderState::Hyperfocused => "no interruptions: hints and hooks held back",
            ReaderState::Fatigued => "simpler layout, reduced motion, slower token reveal",
        }
    }
}

/// One interaction the page saw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Signal {
    /// A key press; `correction` for Backspace/Delete.
    Key {
        /// Backspace or Delete.
        correction: bool,
    },
    /// A click or tap.
    Click,
    /// A scroll by `dy` pixels (negative: up).
    Scroll {
        /// Pixels scrolled.
        dy: f64,
    },
    /// The tab was hidden (the reader switched away).
    Hidden,
    /// The tab became visible again.
    Visible,
}

/// The window's summary the rules read; shown in the observer panel.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Features {
    /// Seconds since the last interaction.
    pub idle_s: f64,
    /// Key presses per minute.
    pub keys_per_min: f64,
    /// Share of key presses that were corrections.
    pub correction_ratio: f64,
    /// Mean interval between key presses in the window's later half over its earlier half (> 1: slowing).
    pub typing_slowdown: f64,
    /// Coefficient of variation of the intervals between interactions (low: steady cadence).
    pub cadence_cv: f64,
    /// Interactions of any kind per minute.
    pub events_per_min: f64,
    /// Scroll direction reversals per minute.
    pub reversals_per_min: f64,
    /// Clicks per minute.
    pub clicks_per_min: f64,
    /// Times the tab was left in the window.
    pub tab_switches: usize,
    /// Whether the tab is hidden now.
    pub hidden: bool,
    /// Seconds of history available (up to the window).
    pub span_s: f64,
}

/// The rules, in order; the first that matches decides. Returns the state and the rule that chose it.
pub fn classify(f: &Features) -> (ReaderState, &'static str) {
    use ReaderState::*;
    if f.hidden || f.tab_switches >= 2 {
        return (Drifting, "left the tab");
    }
    if f.idle_s >= 15.0 {
        return (Drifting, "no interaction for 15 s");
    }
    if f.reversals_per_min >= 8.0 && f.keys_per_min < 10.0 {
        return (Drifting, "scrolling back and forth without typing");
    }
    if f.keys_per_min >= 20.0 && f.typing_slowdown >= 1.6 {
        return (Fatigued, "typing slowed by 60% across the window");
    }
    if f.keys_per_min >= 20.0 && f.correction_ratio >= 0.25 {
        return (Fatigued, "a quarter of key presses are corrections");
    }
    if f.span_s >= WINDOW - 1.0 && f.idle_s < 3.0 && f.events_per_min >= 90.0 && f.cadence_cv < 0.6 {
        return (Hyperfocused, "fast, steady interaction for the whole window");
    }
    (Focused, "steady interaction")
}

/// The detector: a rolling window of timestamped signals and the current state with hysteresis.
#[derive(Clone, Debug)]
pub struct Detector {
    events: VecDeque<(f64, Signal)>,
    hidden: bool,
    state: ReaderState,
    candidate: Option<(ReaderState, u32)>,
    reason: &'static str,
    start: Option<f64>,
}

impl Default for Detector {
    fn default() -> Self {
        Detector {
            events: VecDeque::new(),
            hidden: false,
            state: ReaderState::Focused,
            candidate: None,
            reason: "no signals yet",
            start: None,
        }
    }
}

impl Detector {
    /// Records `signal` at time `t` (seconds, non-decreasing).
    pub fn observe(&mut self, t: f64, signal: Signal) {
        self.start.get_or_insert(t);
        match signal {
            Signal::Hidden => self.hidden = true,
            Signal::Visible => self.hidden = false,
            _ => {}
        }
        self.events.push_back((t, signal));
    }

    /// The window's features at time `now`.
    pub fn features(&mut self, now: f64) -> Features {
        while self.events.front().is_some_and(|&(t, _)| t < now - WINDOW) {
            self.events.pop_front();
        }
        let span_s = self.start.map_or(0.0, |s| (now - s).min(WINDOW));
        let per_min = |n: usize| n as f64 * 60.0 / span_s.max(5.0);
        let keys: Vec<(f64, bool)> = self
            .events
            .iter()
            .filter_map(|&(t, s)| match s {
                Signal::Key { correction } => Some((t, correction)),
                _ => None,
            })
            .collect();
        let interactions: Vec<f64> =
            self.events.iter().filter(|(_, s)| !matches!(s, Signal::Hidden | Signal::Visible)).map(|e| e.0).collect();
        let mut reversals = 0;
        let mut last_dir = 0.0f64;
        for &(_, s) in &self.events {
            if let Signal::Scroll { dy } = s {
                if dy != 0.0 && last_dir != 0.0 && dy.signum() != last_dir {
                    reversals += 1;
                }
                if dy != 0.0 {
                    last_dir = dy.signum();
                }
            }
        }
        let key_times: Vec<f64> = keys.iter().map(|k| k.0).collect();
        Features {
            idle_s: interactions.last().map_or(span_s, |&t| now - t),
            keys_per_min: per_min(keys.len()),
            correction_ratio: keys.iter().filter(|k| k.1).count() as f64 / keys.len().max(1) as f64,
            typing_slowdown: slowdown(&key_times),
            cadence_cv: cv(&interactions),
            events_per_min: per_min(interactions.len()),
            reversals_per_min: per_min(reversals),
            clicks_per_min: per_min(self.events.iter().filter(|e| e.1 == Signal::Click).count()),
            tab_switches: self.events.iter().filter(|e| e.1 == Signal::Hidden).count(),
            hidden: self.hidden,
            span_s,
        }
    }

    /// Re-evaluates at `now` (the page ticks every 2 s): a classification different from the current state must
    /// hold for [`HOLD_TICKS`] ticks in a row before the state follows it. Returns the state.
    pub fn tick(&mut self, now: f64) -> ReaderState {
        let (seen, reason) = classify(&self.features(now));
        if seen == self.state {
            self.candidate = None;
            self.reason = reason;
            return self.state;
        }
        let count = match self.candidate {
            Some((c, n)) if c == seen => n + 1,
            _ => 1,
        };
        self.candidate = Some((seen, count));
        if count >= HOLD_TICKS {
            self.state = seen;
            self.reason = reason;
            self.candidate = None;
        }
        self.state
    }

    /// The current state.
    pub fn state(&self) -> ReaderState {
        self.state
    }

    /// The rule behind the current state.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

/// Longest gap between key presses that still counts as typing (longer ones are pauses, read by `idle_s`).
const TYPING_GAP: f64 = 5.0;

/// Mean interval of the later half of `times` over the earlier half's, pauses left out (1 when too few).
fn slowdown(times: &[f64]) -> f64 {
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).filter(|&g| g <= TYPING_GAP).collect();
    if gaps.len() < 8 {
        return 1.0;
    }
    let (early, late) = gaps.split_at(gaps.len() / 2);
    let mean = |g: &[f64]| g.iter().sum::<f64>() / g.len() as f64;
    mean(late) / mean(early).max(1e-3)
}

/// Coefficient of variation of the gaps between `times` (0 when too few).
fn cv(times: &[f64]) -> f64 {
    if times.len() < 3 {
        return 0.0;
    }
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
    var.sqrt() / mean.max(1e-3)
}

/// How often the automated decision agreed with the reader's overrides.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Agreement {
    /// Overrides made.
    pub overrides: usize,
    /// Overrides that chose the state the detector had chosen.
    pub agreed: usize,
}

impl Agreement {
    /// Records an override to `chosen` while the detector said `detected`.
    pub fn record(&mut self, detected: ReaderState, chosen: ReaderState) {
        self.overrides += 1;
        self.agreed += usize::from(detected == chosen);
    }

    /// The agreed share, when there were overrides.
    pub fn rate(&self) -> Option<f64> {
        (self.overrides > 0).then(|| self.agreed as f64 / self.overrides as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays `trace` (time, signal) with ticks every 2 s up to `until`; returns the state at each tick.
    fn replay(trace: &[(f64, Signal)], until: f64) -> Vec<ReaderState> {
        let mut d = Detector::default();
        let mut states = Vec::new();
        let mut next = 0;
        let mut now = 2.0;
        while now <= until {
            while next < trace.len() && trace[next].0 <= now {
                d.observe(trace[next].0, trace[next].1);
                next += 1;
            }
            states.push(d.tick(now));
            now += 2.0;
        }
        states
    }

    fn keys(from: f64, to: f64, gap: impl Fn(f64) -> f64, correction_every: usize) -> Vec<(f64, Signal)> {
        let (mut t, mut i, mut out) = (from, 0, Vec::new());
        while t < to {
            i += 1;
            out.push((t, Signal::Key { correction: correction_every > 0 && i % correction_every == 0 }));
            t += gap(t - from);
        }
        out
    }

    #[test]
    fn steady_typing_is_focused() {
        let states = replay(&keys(0.0, 60.0, |_| 1.5, 0), 60.0);
        assert!(states.iter().all(|&s| s == ReaderState::Focused), "{states:?}");
    }

    #[test]
    fn fast_steady_typing_for_a_whole_window_is_hyperfocused() {
        let states = replay(&keys(0.0, 70.0, |_| 0.25, 0), 70.0);
        assert_eq!(*states.last().unwrap(), ReaderState::Hyperfocused);
        // Not before the window has filled and the hold has passed.
        assert_eq!(states[5], ReaderState::Focused);
    }

    #[test]
    fn long_idle_and_tab_switches_are_drifting() {
        let mut trace = keys(0.0, 10.0, |_| 1.0, 0);
        let states = replay(&trace, 40.0);
        assert_eq!(*states.last().unwrap(), ReaderState::Drifting);
        trace.extend([(12.0, Signal::Hidden), (14.0, Signal::Visible), (15.0, Signal::Hidden)]);
        let states = replay(&trace, 22.0);
        assert_eq!(*states.last().unwrap(), ReaderState::Drifting);
    }

    #[test]
    fn slowing_typing_or_many_corrections_are_fatigued() {
        let slowing = keys(0.0, 34.0, |t| 0.3 + t * 0.08, 0);
        assert_eq!(*replay(&slowing, 34.0).last().unwrap(), ReaderState::Fatigued);
        let corrections = keys(0.0, 60.0, |_| 1.0, 3);
        assert_eq!(*replay(&corrections, 60.0).last().unwrap(), ReaderState::Fatigued);
    }

    #[test]
    fn aimless_scrolling_is_drifting() {
        let trace: Vec<_> =
            (0..60).map(|i| (i as f64 * 0.5, Signal::Scroll { dy: if i % 2 == 0 { 120.0 } else { -120.0 } })).collect();
        assert_eq!(*replay(&trace, 30.0).last().unwrap(), ReaderState::Drifting);
    }

    #[test]
    fn a_state_holds_against_one_off_blips() {
        // Steady typing with single 16-second pauses: each pause is one or two drifting ticks, never three.
        let mut trace = keys(0.0, 20.0, |_| 1.5, 0);
        trace.extend(keys(35.0, 50.0, |_| 1.5, 0));
        trace.extend(keys(54.0, 80.0, |_| 1.5, 0));
        let states = replay(&trace, 80.0);
        assert!(states.iter().all(|&s| s == ReaderState::Focused), "{states:?}");
        // A lasting change does come through, after the hold.
        let states = replay(&keys(0.0, 10.0, |_| 1.5, 0), 40.0);
        let first_drift = states.iter().position(|&s| s == ReaderState::Drifting).unwrap();
        assert!(first_drift >= 7 + HOLD_TICKS as usize - 1, "{states:?}");
    }

    #[test]
    fn names_round_trip_and_agreement_counts() {
        for s in ReaderState::ALL {
            assert_eq!(ReaderState::from_name(s.name()), Some(s));
        }
        let mut a = Agreement::default();
        assert_eq!(a.rate(), None);
        a.record(ReaderState::Focused, ReaderState::Focused);
        a.record(ReaderState::Focused, ReaderState::Fatigued);
        assert_eq!(a.rate(), Some(0.5));
    }
}
