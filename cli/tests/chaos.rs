//! Issue #6's chaos run: 200 calls in progress with RTP flowing both ways through two signalling
//! instances and three media nodes of one pool (separate `centrex` processes on 127.0.0.x, a real
//! etcd), then, one after another with steady audio between them: SIGKILL a signalling instance,
//! SIGKILL a media node, scale the media pool down by one (the drain request, then SIGTERM) and
//! restart an etcd member. It prints the calls started, completed normally and dropped (the
//! target is none) and the longest audio gap, overall and per step. `scripts/chaos` runs it.

#[path = "chaos/audio.rs"]
mod audio;
#[path = "chaos/figures.rs"]
mod figures;
#[path = "chaos/phones.rs"]
mod phones;
#[path = "chaos/platform.rs"]
mod platform;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use audio::Audio;
use centrex_coord::testing::eventually;
use figures::{CallReport, Ending, Figures, Period, Verdict, say};
use futures::StreamExt;
use phones::{Call, Failure, Leg, Phones};
use platform::{Options, Platform};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

/// Calls in progress when the chaos starts.
const CALLS: usize = 200;
/// Callers: each places `CALLS / CALLERS` calls (a user may hold 8 at once).
const CALLERS: usize = 50;
/// One callee per call, so that the callee's leg tells which call it belongs to.
const CALLEES: usize = CALLS;
/// Calls are placed at 50 per second at most…
const PLACE_EVERY: Duration = Duration::from_millis(20);
/// …with at most this many being set up at once, so that admission (etcd writes) keeps up: a
/// setup slower than T1 (500 ms) has its INVITE retransmitted, as any phone does.
const SETUPS_IN_FLIGHT: usize = 8;
/// Registrations in flight at once.
const IN_FLIGHT: usize = 25;
/// Steady audio before the first step and after each one once every call has its audio again.
const STEADY: Duration = Duration::from_secs(5);
/// Longest wait after a step for silent calls to get their audio back: a dead media node's
/// registration lease (10 s) and the re-INVITEs that move its calls.
const RECOVERY: Duration = Duration::from_secs(15);
/// A direction without a packet for this long is silent.
const SILENT: Duration = Duration::from_millis(300);
/// A call ends normally only with audio both ways within this before its BYE.
const LAST_SECOND: Duration = Duration::from_secs(1);
/// How often silence is sampled while waiting.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// The whole run, start-up to figures.
const WHOLE_RUN: Duration = Duration::from_secs(115);

/// The chaos steps, in order.
#[derive(Debug, Clone, Copy)]
enum Step {
    KillSignalling,
    KillMediaNode,
    ScaleDownMediaPool,
    RestartEtcdMember,
}

impl Step {
    /// What the step does, as the issue says it.
    fn label(self) -> &'static str {
        match self {
            Step::KillSignalling => "kill a signalling instance",
            Step::KillMediaNode => "kill a media node",
            Step::ScaleDownMediaPool => "scale the media pool down by one",
            Step::RestartEtcdMember => "restart an etcd member",
        }
    }
}

const STEPS: [Step; 4] = [
    Step::KillSignalling,
    Step::KillMediaNode,
    Step::ScaleDownMediaPool,
    Step::RestartEtcdMember,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a minute of five processes and 20,000 RTP packets/s, and a setup retransmission is sometimes answered 401 stale: scripts/chaos runs it"]
async fn no_call_drops_when_signalling_and_media_nodes_die_the_pool_shrinks_and_etcd_restarts() {
    let figures = tokio::time::timeout(WHOLE_RUN, run())
        .await
        .unwrap_or_else(|_| {
            panic!("the chaos run took more than {WHOLE_RUN:?}; the last `chaos:` line says where")
        });
    assert_eq!(
        figures.dropped, 0,
        "{} of {} calls were dropped",
        figures.dropped, figures.started
    );
    assert_eq!(
        figures.started, figures.placed,
        "calls that never got going were not measured (the `not started` lines say why)"
    );
}

/// A call of the run: who, and how it went.
struct Placed {
    caller: String,
    callee: String,
    call: Result<Call, Failure>,
    callee_leg: Option<Arc<Leg>>,
    /// Audio flowed both ways before the first step.
    started: bool,
    /// The media node relaying it then.
    first_relay: Option<IpAddr>,
}

impl Placed {
    /// Both directions of an answered call.
    fn legs(&self) -> Option<(&Arc<Leg>, &Arc<Leg>)> {
        Some((&self.call.as_ref().ok()?.leg, self.callee_leg.as_ref()?))
    }

    /// Going, and not hung up by the platform.
    fn live(&self) -> Option<(&Arc<Leg>, &Arc<Leg>)> {
        let (caller, callee) = self.legs()?;
        let hung_up =
            caller.hung_up_by_platform().is_some() || callee.hung_up_by_platform().is_some();
        (self.started && !hung_up).then_some((caller, callee))
    }

    /// Whether audio arrived both ways in the `window` before `at`.
    fn flowing(&self, at: Instant, window: Duration) -> bool {
        self.legs().is_some_and(|(caller, callee)| {
            caller.stream.flowing(at, window) && callee.stream.flowing(at, window)
        })
    }
}

async fn run() -> Figures {
    let logs = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("chaos");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).expect("create the log directory");
    let options = Options::detect();
    say(format_args!(
        "optional flags of this build: {}",
        options.summary()
    ));
    let callers: Vec<String> = (0..CALLERS).map(|i| (2000 + i).to_string()).collect();
    let callees: Vec<String> = (0..CALLEES).map(|i| (3000 + i).to_string()).collect();
    let tenant = platform::tenant(&[callers.clone(), callees.clone()].concat());
    let mut platform = Platform::start(&tenant, &options, &logs).await;
    say(format_args!(
        "platform up: {} signalling instances ({}), {} media nodes, etcd {}; logs in {}",
        platform.signalling.len(),
        platform
            .service
            .map_or("each on its own address".to_string(), |s| format!(
                "sharing {s}"
            )),
        platform.media.len(),
        platform.coordination.endpoints(),
        logs.display()
    ));

    let audio = Audio::start();
    let phones = Arc::new(Phones::bind(audio.clone()).await);
    register(&phones, &platform, &callees).await;
    let mut calls = place_calls(&phones, &platform, &callers, &callees).await;
    let answered = calls.iter().filter(|c| c.call.is_ok()).count();
    say(format_args!("{answered} of {CALLS} calls answered"));
    wait_for_audio(&mut calls).await;

    let start = Instant::now();
    let mut periods = vec![Period {
        name: "steady state".into(),
        start,
    }];
    settle("steady state", start, &calls).await;
    for step in STEPS {
        let start = Instant::now();
        let done = perform(step, &mut platform, &calls).await;
        say(format_args!("{}: {done}", step.label()));
        periods.push(Period {
            name: step.label().into(),
            start,
        });
        settle(step.label(), start, &calls).await;
    }

    let reports = hang_up(&phones, &platform, &calls).await;
    phones.stop();
    audio.stop();
    let figures = Figures::tally(&reports, &periods);
    figures.print();
    say(format_args!("process logs: {}", logs.display()));
    figures
}

/// Registers every callee, spread over the instances; the first once the tenant has reached
/// signalling.
async fn register(phones: &Phones, platform: &Platform, callees: &[String]) {
    let first = &callees[0];
    let what = format!("{first} to register (the tenant to reach signalling)");
    eventually(&what, || async {
        phones.register(first, 0, platform.entry(0)).await.ok()
    })
    .await;
    let failures: Vec<String> = futures::stream::iter(callees.iter().enumerate().skip(1))
        .map(|(n, user)| async move {
            let registered = phones.register(user, n, platform.entry(n)).await;
            registered.err().map(|e| format!("{user}: {e}"))
        })
        .buffer_unordered(IN_FLIGHT)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "callees could not register: {failures:?}"
    );
    say(format_args!("{} callees registered", callees.len()));
}

/// Places the calls at [`PLACE_EVERY`], [`SETUPS_IN_FLIGHT`] at most at once: call `i` from
/// caller `i % CALLERS` to callee `i`, through the instances in turn.
async fn place_calls(
    phones: &Arc<Phones>,
    platform: &Platform,
    callers: &[String],
    callees: &[String],
) -> Vec<Placed> {
    let mut placing = JoinSet::new();
    let mut pace = tokio::time::interval(PLACE_EVERY);
    pace.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let setups = Arc::new(Semaphore::new(SETUPS_IN_FLIGHT));
    for (i, callee) in callees.iter().enumerate() {
        pace.tick().await;
        let setup = setups.clone().acquire_owned().await.expect("never closed");
        let caller = callers[i % callers.len()].clone();
        let (phones, entry, callee) = (phones.clone(), platform.entry(i), callee.clone());
        placing.spawn(async move {
            let call = phones.call(&caller, i, &callee, entry).await;
            drop(setup);
            let callee_leg = phones.callee_leg(&callee);
            (
                i,
                Placed {
                    caller,
                    callee,
                    call,
                    callee_leg,
                    started: false,
                    first_relay: None,
                },
            )
        });
    }
    let mut calls: Vec<(usize, Placed)> = placing.join_all().await.into_iter().collect();
    calls.sort_by_key(|(i, _)| *i);
    calls.into_iter().map(|(_, placed)| placed).collect()
}

/// Waits for audio both ways on every answered call; calls without it then did not start.
async fn wait_for_audio(calls: &mut [Placed]) {
    let deadline = Instant::now() + RECOVERY;
    let mut samples = tokio::time::interval(SAMPLE_EVERY);
    loop {
        samples.tick().await;
        let now = Instant::now();
        let waiting = calls
            .iter()
            .filter(|c| c.call.is_ok() && !c.flowing(now, SILENT))
            .count();
        if waiting == 0 || now >= deadline {
            for call in calls.iter_mut() {
                call.started = call.flowing(now, SILENT);
                call.first_relay = call
                    .legs()
                    .and_then(|(caller, _)| caller.relay())
                    .map(|r| r.ip());
            }
            if waiting > 0 {
                say(format_args!(
                    "{waiting} answered calls had no audio both ways after {RECOVERY:?}: not started"
                ));
            }
            return;
        }
    }
}

/// Holds the load until every live call has its audio again (at most [`RECOVERY`] after `start`),
/// then for [`STEADY`] more; says how many calls were silent.
async fn settle(after: &str, start: Instant, calls: &[Placed]) {
    let mut samples = tokio::time::interval(SAMPLE_EVERY);
    let (mut most, mut recovered_at) = (0, None);
    loop {
        samples.tick().await;
        let now = Instant::now();
        let silent = calls
            .iter()
            .filter_map(Placed::live)
            .filter(|(caller, callee)| {
                !caller.stream.flowing(now, SILENT) || !callee.stream.flowing(now, SILENT)
            })
            .count();
        most = most.max(silent);
        recovered_at = match (silent, recovered_at) {
            (0, None) => Some(now),
            (0, since) => since,
            _ => None,
        };
        if let Some(at) = recovered_at
            && now - at >= STEADY
        {
            let outcome = if most > 0 {
                format!("all back after {:.1} s", (at - start).as_secs_f64())
            } else {
                "none".to_string()
            };
            say(format_args!(
                "after {after}: at most {most} calls silent at once; {outcome}"
            ));
            return;
        }
        if recovered_at.is_none() && now - start >= RECOVERY {
            say(format_args!(
                "after {after}: at most {most} calls silent at once; {silent} still silent after {RECOVERY:?}, going on"
            ));
            return;
        }
    }
}

/// Carries out `step`; what was done.
async fn perform(step: Step, platform: &mut Platform, calls: &[Placed]) -> String {
    let live = || calls.iter().filter_map(Placed::live);
    match step {
        Step::KillSignalling => {
            let instance = &mut platform.signalling[0];
            let ip = instance.sip.ip();
            let held = live()
                .filter(|(_, callee)| callee.called_from().is_some_and(|from| from.ip() == ip))
                .count();
            instance.process.kill().await;
            format!("SIGKILL {} (holding {held} calls)", instance.process.name)
        }
        Step::KillMediaNode => {
            let node = &mut platform.media[0];
            let held = live()
                .filter(|(caller, _)| caller.relay().is_some_and(|r| r.ip() == node.ip))
                .count();
            node.process.kill().await;
            format!("SIGKILL {} (relaying {held} calls)", node.id)
        }
        Step::ScaleDownMediaPool => {
            let ip = platform.media[1].ip;
            let held = live()
                .filter(|(caller, _)| caller.relay().is_some_and(|r| r.ip() == ip))
                .count();
            let exit = platform.scale_down(1).await;
            let exit = exit.map_or_else(
                || "still running well after its drain timeout".to_string(),
                |status| format!("exited {status}"),
            );
            format!(
                "scale down: drain request + SIGTERM {} (relaying {held} calls; {exit})",
                platform.media[1].id
            )
        }
        Step::RestartEtcdMember => {
            let member = platform.coordination.restart_member().await;
            format!("SIGKILL and restart etcd member {member}")
        }
    }
}

/// Hangs every started call up (the platform's hang-ups aside), noting first whether its audio
/// flowed both ways in its last second; the report of every call.
async fn hang_up(phones: &Phones, platform: &Platform, calls: &[Placed]) -> Vec<CallReport> {
    say("hanging up");
    let reports: Vec<CallReport> = futures::stream::iter(calls)
        .map(|placed| async move { report(phones, platform, placed).await })
        // All at once: a BYE to a dead instance waits its whole transaction time.
        .buffered(CALLS)
        .collect()
        .await;
    reports
}

/// Ends one call and says how it went.
async fn report(phones: &Phones, platform: &Platform, placed: &Placed) -> CallReport {
    let not_started = |why: String| CallReport {
        who: format!("{} → {}", placed.caller, placed.callee),
        verdict: Verdict::NotStarted(why),
        signalling: String::new(),
        media: String::new(),
        reinvites: 0,
        gaps: Vec::new(),
    };
    let call = match &placed.call {
        Ok(call) => call,
        Err(failure) => return not_started(failure.to_string()),
    };
    let Some(callee_leg) = placed.callee_leg.as_ref().filter(|_| placed.started) else {
        return not_started("no audio both ways once answered".into());
    };
    let platform_bye = [&call.leg, callee_leg]
        .iter()
        .filter_map(|leg| leg.hung_up_by_platform())
        .min();
    let ending_at = platform_bye.unwrap_or_else(Instant::now);
    let to_caller_flowing = call.leg.stream.flowing(ending_at, LAST_SECOND);
    let to_callee_flowing = callee_leg.stream.flowing(ending_at, LAST_SECOND);
    call.leg.stream.stop();
    callee_leg.stream.stop();
    let bye = if call.leg.hung_up_by_platform().is_some() {
        None
    } else {
        phones.hang_up(call).await.ok()
    };
    let ending = Ending {
        platform_hung_up: platform_bye.is_some(),
        bye,
        to_caller_flowing,
        to_callee_flowing,
    };
    let mut gaps = call.leg.stream.heard().gaps_until(ending_at);
    gaps.extend(callee_leg.stream.heard().gaps_until(ending_at));
    CallReport {
        who: format!("{} → {}", placed.caller, placed.callee),
        verdict: ending.verdict(),
        signalling: callee_leg
            .called_from()
            .map_or_else(|| "no instance".into(), |from| platform.name_of(from.ip())),
        media: media_path(
            platform,
            placed.first_relay,
            call.leg.relay().map(|r| r.ip()),
        ),
        reinvites: call.leg.reinvites() + callee_leg.reinvites(),
        gaps,
    }
}

/// The media nodes a call's audio went through: where it started, and where it ended up if it
/// moved.
fn media_path(platform: &Platform, first: Option<IpAddr>, last: Option<IpAddr>) -> String {
    let name =
        |ip: Option<IpAddr>| ip.map_or_else(|| "no media node".into(), |ip| platform.name_of(ip));
    if first == last {
        name(first)
    } else {
        format!("{} → {}", name(first), name(last))
    }
}
