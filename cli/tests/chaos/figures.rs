//! The figures of a chaos run: how each call ended, the longest audio gap overall and per period
//! (the steady state, then each step), and the lines printed at the end. Every line starts with
//! `chaos:` so that scripts/chaos can repeat them after cargo's output.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::audio::Gap;

/// A pause this long is a call gone silent, not jitter.
const SILENCE: Duration = Duration::from_secs(1);

/// Prints one line of the run's output.
pub fn say(line: impl fmt::Display) {
    eprintln!("chaos: {line}");
}

/// A period of the run: the steady state before the first step, then one per step.
pub struct Period {
    pub name: String,
    pub start: Instant,
}

/// What went wrong with a call that was going and did not end normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Loss {
    /// The platform sent BYE before the caller hung up.
    HungUpByPlatform,
    /// The caller's BYE got no answer.
    ByeUnanswered,
    /// The caller's BYE got this final answer instead of 200.
    ByeRefused(u16),
    /// No audio reached the caller in the last second before hanging up.
    SilentToCaller,
    /// No audio reached the callee in the last second before hanging up.
    SilentToCallee,
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HungUpByPlatform => f.write_str("hung up by the platform"),
            Self::ByeUnanswered => f.write_str("BYE unanswered"),
            Self::ByeRefused(status) => write!(f, "BYE answered {status}"),
            Self::SilentToCaller => f.write_str("no audio to the caller in its last second"),
            Self::SilentToCallee => f.write_str("no audio to the callee in its last second"),
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Never going: not answered, or no audio both ways before the first step.
    NotStarted(String),
    /// BYE answered 200 with audio both ways in the last second before it.
    Completed,
    /// Going, then lost: everything that went wrong.
    Dropped(Vec<Loss>),
}

/// How a started call's end went.
pub struct Ending {
    pub platform_hung_up: bool,
    /// The status answering the caller's BYE (`None`: unanswered); not asked when the platform
    /// had hung up on the caller.
    pub bye: Option<u16>,
    pub to_caller_flowing: bool,
    pub to_callee_flowing: bool,
}

impl Ending {
    /// Completed when the BYE got its 200 with audio both ways until then; dropped otherwise.
    pub fn verdict(&self) -> Verdict {
        let mut losses = Vec::new();
        if self.platform_hung_up {
            losses.push(Loss::HungUpByPlatform);
        }
        match self.bye {
            Some(200) => {}
            Some(status) => losses.push(Loss::ByeRefused(status)),
            None if self.platform_hung_up => {}
            None => losses.push(Loss::ByeUnanswered),
        }
        if !self.to_caller_flowing {
            losses.push(Loss::SilentToCaller);
        }
        if !self.to_callee_flowing {
            losses.push(Loss::SilentToCallee);
        }
        if losses.is_empty() {
            Verdict::Completed
        } else {
            Verdict::Dropped(losses)
        }
    }
}

/// One call as the figures need it.
pub struct CallReport {
    /// Caller → callee.
    pub who: String,
    pub verdict: Verdict,
    /// The signalling instance that set it up, and the media nodes its audio went through (the
    /// first, and the last when it moved).
    pub signalling: String,
    pub media: String,
    pub reinvites: usize,
    /// Pauses of both directions, the one open at its end included.
    pub gaps: Vec<Gap>,
}

/// The figures of the run.
#[derive(Debug, Default)]
pub struct Figures {
    pub placed: usize,
    pub started: usize,
    pub completed: usize,
    pub dropped: usize,
    pub longest_gap: Option<Duration>,
    /// Which call had the longest gap and when, from the first period's start.
    pub longest_where: String,
    /// Per period: its name and start (from the first one's), the longest gap noticed in it and
    /// the calls that went silent in it (a gap of a second or more).
    pub periods: Vec<(String, Duration, Option<Duration>, usize)>,
    pub losses: BTreeMap<Loss, usize>,
    pub not_started: BTreeMap<String, usize>,
    /// Calls and drops by (signalling instance, media node).
    pub by_place: BTreeMap<(String, String), (usize, usize)>,
    pub reinvites: usize,
    /// A few dropped calls in full, to start a diagnosis from.
    pub examples: Vec<String>,
}

/// Dropped calls printed in full.
const EXAMPLES: usize = 5;

impl Figures {
    /// Tallies `calls` over `periods`.
    pub fn tally(calls: &[CallReport], periods: &[Period]) -> Self {
        let mut figures = Figures {
            placed: calls.len(),
            periods: periods
                .iter()
                .map(|p| (p.name.clone(), since(periods, p.start), None, 0))
                .collect(),
            ..Figures::default()
        };
        for call in calls {
            let dropped = match &call.verdict {
                Verdict::NotStarted(why) => {
                    *figures.not_started.entry(why.clone()).or_default() += 1;
                    continue;
                }
                Verdict::Completed => false,
                Verdict::Dropped(losses) => {
                    if figures.examples.len() < EXAMPLES {
                        let losses: Vec<String> = losses.iter().map(Loss::to_string).collect();
                        figures.examples.push(format!(
                            "{} via {} and {}: {}",
                            call.who,
                            call.signalling,
                            call.media,
                            losses.join(", ")
                        ));
                    }
                    for loss in losses {
                        *figures.losses.entry(*loss).or_default() += 1;
                    }
                    true
                }
            };
            figures.started += 1;
            figures.completed += usize::from(!dropped);
            figures.dropped += usize::from(dropped);
            figures.reinvites += call.reinvites;
            let place = (call.signalling.clone(), call.media.clone());
            let (calls_there, dropped_there) = figures.by_place.entry(place).or_default();
            *calls_there += 1;
            *dropped_there += usize::from(dropped);
            let mut silenced = vec![false; periods.len()];
            for gap in &call.gaps {
                let length = gap.length();
                if Some(length) > figures.longest_gap {
                    figures.longest_gap = Some(length);
                    figures.longest_where = format!(
                        "{}, from +{:.1} s",
                        call.who,
                        since(periods, gap.start).as_secs_f64()
                    );
                }
                if let Some(i) = period_of(periods, gap.noticed()) {
                    figures.periods[i].2 = figures.periods[i].2.max(Some(length));
                    silenced[i] |= length >= SILENCE;
                }
            }
            for (i, silenced) in silenced.into_iter().enumerate() {
                figures.periods[i].3 += usize::from(silenced);
            }
        }
        figures
    }

    /// Prints the figures, one `chaos:` line each.
    pub fn print(&self) {
        say("==== figures ====");
        say(format_args!("calls placed              {}", self.placed));
        say(format_args!("calls started             {}", self.started));
        say(format_args!("calls completed normally  {}", self.completed));
        say(format_args!(
            "calls dropped             {} (target 0)",
            self.dropped
        ));
        say(format_args!(
            "longest audio gap         {} ({})",
            milliseconds(self.longest_gap),
            self.longest_where
        ));
        for (name, start, longest, silenced) in &self.periods {
            say(format_args!(
                "  {name:<34} from +{:>5.1} s: longest gap {:>9}, calls silenced {silenced}",
                start.as_secs_f64(),
                milliseconds(*longest)
            ));
        }
        say(format_args!(
            "re-INVITEs from the platform (both legs) {}",
            self.reinvites
        ));
        for (loss, count) in &self.losses {
            say(format_args!("  dropped calls with {loss}: {count}"));
        }
        for example in &self.examples {
            say(format_args!("  for example {example}"));
        }
        for (why, count) in &self.not_started {
            say(format_args!("  not started, {why}: {count}"));
        }
        for ((signalling, media), (calls, dropped)) in &self.by_place {
            say(format_args!(
                "  set up by {signalling}, audio via {media}: {calls} calls, {dropped} dropped"
            ));
        }
    }
}

/// How long after the first period's start `at` is.
fn since(periods: &[Period], at: Instant) -> Duration {
    periods.first().map_or(Duration::ZERO, |first| {
        at.saturating_duration_since(first.start)
    })
}

/// The period `at` falls in: the last one begun by then. A gap counts in the period it was
/// noticed in ([`Gap::noticed`]): its last packet came before the step that caused it.
fn period_of(periods: &[Period], at: Instant) -> Option<usize> {
    periods.iter().rposition(|p| p.start <= at)
}

/// A length in whole milliseconds, `-` for none (no gap over the jitter threshold).
fn milliseconds(length: Option<Duration>) -> String {
    length.map_or_else(
        || format!("< {} ms", crate::audio::GAP.as_millis()),
        |l| format!("{} ms", l.as_millis()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ending() -> Ending {
        Ending {
            platform_hung_up: false,
            bye: Some(200),
            to_caller_flowing: true,
            to_callee_flowing: true,
        }
    }

    #[test]
    fn a_call_completes_only_with_its_bye_answered_200_and_audio_both_ways_to_the_end() {
        assert_eq!(ending().verdict(), Verdict::Completed);
        let silent = Ending {
            to_callee_flowing: false,
            ..ending()
        };
        assert_eq!(
            silent.verdict(),
            Verdict::Dropped(vec![Loss::SilentToCallee])
        );
        let unknown = Ending {
            bye: Some(481),
            ..ending()
        };
        assert_eq!(
            unknown.verdict(),
            Verdict::Dropped(vec![Loss::ByeRefused(481)])
        );
        let lost = Ending {
            bye: None,
            ..ending()
        };
        assert_eq!(lost.verdict(), Verdict::Dropped(vec![Loss::ByeUnanswered]));
    }

    /// A steady period from `t0` and a step 10 s later.
    fn periods(t0: Instant) -> [Period; 2] {
        [
            Period {
                name: "steady".into(),
                start: t0,
            },
            Period {
                name: "kill".into(),
                start: t0 + Duration::from_secs(10),
            },
        ]
    }

    fn completed_with(gap: Gap) -> CallReport {
        CallReport {
            who: "2000 → 3000".into(),
            verdict: ending().verdict(),
            signalling: "signalling-0".into(),
            media: "media-0".into(),
            reinvites: 0,
            gaps: vec![gap],
        }
    }

    #[test]
    fn a_gap_counts_in_the_period_it_was_noticed_in() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let call = completed_with(Gap {
            start: s(8),
            end: s(11),
        });
        let figures = Figures::tally(&[call], &periods(t0));
        assert_eq!(figures.periods[0].2, Some(Duration::from_secs(3)));
        assert_eq!(figures.periods[0].3, 1);
        assert_eq!(
            figures.periods[1],
            ("kill".to_string(), Duration::from_secs(10), None, 0)
        );
        assert_eq!(figures.longest_gap, Some(Duration::from_secs(3)));
        assert_eq!((figures.started, figures.completed), (1, 1));
    }

    #[test]
    fn a_pause_whose_last_packet_came_just_before_a_step_is_the_steps() {
        let t0 = Instant::now();
        let step = t0 + Duration::from_secs(10);
        let call = completed_with(Gap {
            start: step - Duration::from_millis(10),
            end: step + Duration::from_secs(2),
        });
        let figures = Figures::tally(&[call], &periods(t0));
        assert_eq!((figures.periods[0].3, figures.periods[1].3), (0, 1));
    }
}
