//! Finding the highest sustained rate: short probes up a ladder of rates until one fails, then a
//! long hold at the best passing rate, stepping down when a hold fails. Pure: the caller runs each
//! step and reports whether it passed.

/// What to run next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A short probe at this rate.
    Probe(u32),
    /// A long hold at this rate.
    Hold(u32),
    /// Finished: the rate held for the whole hold, if any.
    Done(Option<u32>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Probing(usize),
    Holding(usize),
    Done(Option<u32>),
}

/// The state of one search over a ladder of rising rates.
#[derive(Debug, Clone)]
pub struct Search {
    ladder: Vec<u32>,
    phase: Phase,
    /// Highest ladder index whose probe passed.
    best: Option<usize>,
    /// Holds still allowed (each failed hold steps down one rung).
    holds_left: u32,
}

impl Search {
    /// A search over `ladder` (rising rates) allowing at most `holds` hold attempts.
    pub fn new(ladder: &[u32], holds: u32) -> Self {
        debug_assert!(ladder.windows(2).all(|w| w[0] < w[1]), "ladder must rise");
        let phase = if ladder.is_empty() || holds == 0 {
            Phase::Done(None)
        } else {
            Phase::Probing(0)
        };
        Self {
            ladder: ladder.to_vec(),
            phase,
            best: None,
            holds_left: holds,
        }
    }

    /// The step to run now.
    pub fn next(&self) -> Step {
        match self.phase {
            Phase::Probing(i) => Step::Probe(self.ladder[i]),
            Phase::Holding(i) => Step::Hold(self.ladder[i]),
            Phase::Done(rate) => Step::Done(rate),
        }
    }

    /// Records the outcome of the step [`Search::next`] returned.
    pub fn record(&mut self, passed: bool) {
        self.phase = match self.phase {
            Phase::Probing(i) if passed => {
                self.best = Some(i);
                if i + 1 < self.ladder.len() {
                    Phase::Probing(i + 1)
                } else {
                    self.start_hold(i)
                }
            }
            Phase::Probing(_) => match self.best {
                Some(best) => self.start_hold(best),
                None => Phase::Done(None),
            },
            Phase::Holding(i) if passed => Phase::Done(Some(self.ladder[i])),
            Phase::Holding(i) if i > 0 && self.holds_left > 0 => self.start_hold(i - 1),
            Phase::Holding(_) | Phase::Done(_) => Phase::Done(None),
        };
    }

    fn start_hold(&mut self, index: usize) -> Phase {
        self.holds_left -= 1;
        Phase::Holding(index)
    }

    /// The highest rate whose probe passed (an upper bound of what holds).
    pub fn best_probe(&self) -> Option<u32> {
        self.best.map(|i| self.ladder[i])
    }

    /// Steps a search can take at most: every probe, then every hold.
    pub fn max_steps(&self) -> usize {
        self.ladder.len() + self.holds_left as usize
    }
}

/// Runs `search` to the end, calling `step` for each probe or hold; bounded by
/// [`Search::max_steps`].
pub fn run(mut search: Search, mut step: impl FnMut(Step) -> bool) -> (Option<u32>, Search) {
    for _ in 0..search.max_steps() {
        match search.next() {
            Step::Done(rate) => return (rate, search),
            next => {
                let passed = step(next);
                search.record(passed);
            }
        }
    }
    match search.next() {
        Step::Done(rate) => (rate, search),
        _ => (None, search),
    }
}

pub mod checks {
    //! Specifications of the search, run by `cargo test --benches` (the bench binary without
    //! `--bench`).
    use super::*;

    /// Every check, by name.
    pub const ALL: &[(&str, fn())] = crate::named![
        probes_rise_until_a_failure_then_the_best_rate_is_held,
        a_failed_hold_steps_down_one_rung_and_retries,
        holds_are_bounded_in_number,
        a_first_probe_failing_ends_without_a_rate,
    ];

    fn steps_for(
        ladder: &[u32],
        holds: u32,
        passes: impl Fn(Step) -> bool,
    ) -> (Vec<Step>, Option<u32>) {
        let mut seen = Vec::new();
        let (rate, _) = run(Search::new(ladder, holds), |step| {
            seen.push(step);
            passes(step)
        });
        (seen, rate)
    }

    fn probes_rise_until_a_failure_then_the_best_rate_is_held() {
        let (steps, rate) = steps_for(&[100, 200, 300, 400], 3, |s| match s {
            Step::Probe(r) | Step::Hold(r) => r <= 200,
            Step::Done(_) => unreachable!(),
        });
        assert_eq!(
            steps,
            [
                Step::Probe(100),
                Step::Probe(200),
                Step::Probe(300),
                Step::Hold(200)
            ]
        );
        assert_eq!(rate, Some(200));
    }

    fn a_failed_hold_steps_down_one_rung_and_retries() {
        let (steps, rate) = steps_for(&[100, 200, 300], 3, |s| match s {
            Step::Probe(r) => r <= 300,
            Step::Hold(r) => r <= 100,
            Step::Done(_) => unreachable!(),
        });
        assert_eq!(
            steps,
            [
                Step::Probe(100),
                Step::Probe(200),
                Step::Probe(300),
                Step::Hold(300),
                Step::Hold(200),
                Step::Hold(100)
            ]
        );
        assert_eq!(rate, Some(100));
    }

    fn holds_are_bounded_in_number() {
        let (steps, rate) = steps_for(&[100, 200, 300, 400], 2, |s| matches!(s, Step::Probe(_)));
        assert_eq!(
            steps.iter().filter(|s| matches!(s, Step::Hold(_))).count(),
            2
        );
        assert_eq!(rate, None);
    }

    fn a_first_probe_failing_ends_without_a_rate() {
        let (steps, rate) = steps_for(&[100, 200], 3, |_| false);
        assert_eq!(steps, [Step::Probe(100)]);
        assert_eq!(rate, None);
    }
}
