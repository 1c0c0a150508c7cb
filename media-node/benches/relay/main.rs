//! Relay throughput and latency against reference forwarders (issue #3, "Benchmark").
//!
//! `cargo bench -p centrex-media-node --bench relay`. Four forwarders, each one worker thread
//! on CPU 0, the load generator on CPU 1: the two references (a port per leg, and one hot
//! socket: see `reference.rs`) and the centrex relay on each of its I/O backends (epoll,
//! io_uring). The load climbs a ladder of rates, each rung run on every forwarder in turn, so
//! all see the same machine; a forwarder leaves the ladder at its first rung failed twice.
//! Then, for each, p50/p99 one-way latency (generator → forwarder → generator, kernel receive
//! timestamps) and CPU per packet at 80 % of its best. Bounded: at most 4 × 31 rungs of 1.5 s
//! and a 240 s budget. Every thread runs SCHED_FIFO when allowed (root), so other work on a
//! shared machine disturbs it less. `RELAY_BUSY_POLL_US=50` runs the relays with
//! `--busy-poll=50us` (default: off, as deployed).

mod generator;
mod reference;
mod system;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use centrex_coord::store::MemoryStore;
use centrex_media_node::relay::Backend;
use centrex_media_node::session::{LegRequest, SessionId, SessionRequest};
use centrex_media_node::{Config, MediaNode, PortRange};
use generator::{Generator, STREAM_PPS, Step, Targets};

const RELAY_CPU: usize = 0;
const GENERATOR_CPU: usize = 1;
/// Sessions (two streams each, one per direction) of each forwarder: up to 320k pps, and the
/// three port-per-leg forwarders' 19,200 sockets within the 20,000 open files allowed here.
const SESSIONS: usize = 3200;
const STEP: Duration = Duration::from_millis(1500);
const LATENCY_STEP: Duration = Duration::from_secs(2);
const LOSS_LIMIT: f64 = 1e-4;
/// Packets still arriving this long after the last send mean the forwarder fell behind.
const KEPT_UP: Duration = Duration::from_millis(20);
/// The ladder: 80k pps up in steps of 8k, to 320k (all the streams).
const FIRST_RATE: u64 = 80_000;
const RATE_STEP: u64 = 8_000;
const RUNGS: u64 = 31;
/// Tries of a rung before it counts as failed: a co-tenant on a shared machine can stall a
/// forwarder once; the first failed rung ends the climb, so the best rate is one sustained on
/// every rung below it.
const TRIES: u32 = 2;
/// Windows the latency step is cut into: the median window's p99 shows the forwarder without
/// a co-tenant's stall, the p99 over all shows the stalls too.
const WINDOWS: usize = 10;
/// Whole-run guard.
const BUDGET: Duration = Duration::from_secs(240);
/// Where the two relays' RTP port ranges start: 4 ports per session each, and 1000 spare for
/// ports other programs hold (a relay skips those).
const EPOLL_PORTS: u16 = 8000;
const URING_PORTS: u16 = 25000;
const SPARE_PORTS: u16 = 1000;

/// One forwarder under test.
struct Forwarder {
    name: &'static str,
    targets: Targets,
    /// Its worker thread, whose CPU time is measured.
    thread: i32,
    best: Option<Step>,
    /// CPU share of the worker thread during the best step.
    best_cpu: f64,
    /// Worker CPU per relayed packet (s) on each passed rung, by offered rate: forwarders
    /// compared at the same load, whatever their best.
    cost: std::collections::BTreeMap<u64, f64>,
    climbing: bool,
    generator_bound: bool,
    /// At 80 % of the best rate: p50, p99, p99 of the median window (ns), CPU per packet (ns).
    latency: Option<(u64, u64, u64, f64)>,
}

impl Forwarder {
    fn new(name: &'static str, pairs: &[(SocketAddr, SocketAddr)], thread: i32) -> Self {
        Self {
            name,
            targets: Targets::new(pairs),
            thread,
            best: None,
            best_cpu: 0.0,
            cost: std::collections::BTreeMap::new(),
            climbing: true,
            generator_bound: false,
            latency: None,
        }
    }

    fn best_pps(&self) -> f64 {
        self.best.as_ref().map_or(0.0, Step::relayed_pps)
    }
}

fn main() {
    let run_start = Instant::now();
    system::raise_file_limit(65536);
    let priority = system::raise_priority();
    let load = machine_load();
    println!(
        "relay benchmark: {}-byte RTP streams at {STREAM_PPS} pps, forwarders on CPU {RELAY_CPU}, generator on CPU {GENERATOR_CPU}",
        generator::PACKET
    );
    println!(
        "CPU busy before the run (other work on the machine): CPU0 {:.0} %, CPU1 {:.0} %; scheduling: {priority}",
        load[0] * 100.0,
        load[1] * 100.0
    );
    on_cpu(RELAY_CPU);
    let floor = system::loopback_costs();
    println!(
        "kernel floor, batched UDP over loopback on one socket: send {:.2} µs + receive {:.2} µs per datagram = {:.0} pps per core",
        floor.0 * 1e6,
        floor.1 * 1e6,
        1.0 / (floor.0 + floor.1)
    );
    // The forwarders' threads start while this thread is on the relay CPU, so they stay there.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut generator = Generator::new().expect("generator socket");
    // The relays first: their port ranges are fixed, the references take ephemeral ports.
    let uring = runtime.block_on(start_relay(generator.addr(), Backend::IoUring, URING_PORTS));
    let epoll = runtime.block_on(start_relay(generator.addr(), Backend::Epoll, EPOLL_PORTS));
    let per_leg =
        reference::Reference::per_leg(SESSIONS, generator.addr()).expect("per-leg reference");
    let hot = reference::Reference::hot_socket(SESSIONS, generator.addr()).expect("hot reference");
    on_cpu(GENERATOR_CPU);
    let mut forwarders = [
        Forwarder::new("reference, one hot socket", &hot.pairs, hot.thread_id),
        Forwarder::new(
            "reference, socket per leg",
            &per_leg.pairs,
            per_leg.thread_id,
        ),
        Forwarder::new("centrex relay, epoll", &epoll.pairs, epoll.thread),
        Forwarder::new("centrex relay, io_uring", &uring.pairs, uring.thread),
    ];
    // `RELAY_BENCH_ONLY=epoll,io_uring` measures only the forwarders whose names contain one
    // of the words (for quick comparisons; the full run measures all four).
    if let Ok(only) = std::env::var("RELAY_BENCH_ONLY") {
        for forwarder in &mut forwarders {
            forwarder.climbing = only.split(',').any(|word| forwarder.name.contains(word));
        }
    }
    climb(&mut generator, &mut forwarders, run_start);
    for forwarder in &mut forwarders {
        measure_latency(&mut generator, forwarder);
    }
    report(&forwarders);
    // io_uring may hand work to kernel threads of the process (io-wq workers, an SQPOLL
    // thread), whose CPU would not show in the worker's: the relay uses neither, checked here.
    let helpers: Vec<i32> = ["iou-wrk", "iou-sqp"]
        .iter()
        .flat_map(|prefix| system::find_threads_with_prefix(prefix))
        .collect();
    let helper_cpu: Duration = helpers.iter().map(|&tid| system::thread_cpu(tid)).sum();
    if helpers.is_empty() {
        println!(
            "io_uring kernel helper threads: none, the worker thread's CPU is all the relay's"
        );
    } else {
        println!(
            "io_uring kernel helper threads: {} with {:.3} s of CPU, to add to the io_uring relay's",
            helpers.len(),
            helper_cpu.as_secs_f64()
        );
    }
    println!(
        "run time {:.0} s; CPU busy after the run: {}",
        run_start.elapsed().as_secs_f64(),
        {
            let load = machine_load();
            format!(
                "CPU0 {:.0} %, CPU1 {:.0} %",
                load[0] * 100.0,
                load[1] * 100.0
            )
        }
    );
}

/// Pins the calling thread; threads it starts afterwards inherit the CPU.
fn on_cpu(cpu: usize) {
    if let Err(error) = system::pin_to_cpu(cpu) {
        eprintln!("cannot pin to CPU {cpu} ({error}); figures are unpinned");
    }
}

/// Busy share of each CPU over half a second.
fn machine_load() -> [f64; 2] {
    let before = [system::cpu_jiffies(0), system::cpu_jiffies(1)];
    std::thread::sleep(Duration::from_millis(500));
    let after = [system::cpu_jiffies(0), system::cpu_jiffies(1)];
    [0, 1].map(|i| (after[i].0 - before[i].0) as f64 / (after[i].1 - before[i].1).max(1) as f64)
}

/// A running relay under test.
struct Relay {
    pairs: Vec<(SocketAddr, SocketAddr)>,
    /// Its worker thread.
    thread: i32,
    _running: tokio::task::JoinHandle<()>,
}

/// A one-worker media node on 127.0.0.1 with `backend`, its ports from `first_port`, and
/// SESSIONS sessions whose peers are the generator.
async fn start_relay(peer: SocketAddr, backend: Backend, first_port: u16) -> Relay {
    let localhost = "127.0.0.1".parse().unwrap();
    let mut config = Config::new("bench-0", "bench", localhost);
    config.bind = localhost;
    config.workers = 1;
    config.max_sessions = SESSIONS as u32;
    config.rtp_ports = PortRange {
        min: first_port,
        max: first_port + 4 * SESSIONS as u16 + SPARE_PORTS - 1,
    };
    config.idle_timeout = Duration::from_secs(3600);
    config.busy_poll = busy_poll();
    config.relay_backend = backend;
    config.grpc_addr = "127.0.0.1:0".parse().unwrap();
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    let workers_before = system::find_threads("relay-0");
    let media = MediaNode::start(config, Arc::new(MemoryStore::new()))
        .await
        .unwrap_or_else(|error| panic!("start the {backend} relay: {error}"));
    let thread = system::find_threads("relay-0")
        .into_iter()
        .find(|tid| !workers_before.contains(tid))
        .expect("the relay worker thread");
    let node = media.node().clone();
    let running = tokio::spawn(async move {
        let _ = media.run(std::future::pending()).await;
    });
    let mut pairs = Vec::with_capacity(SESSIONS);
    for i in 0..SESSIONS {
        let leg = LegRequest {
            rtcp_mux: true,
            remote: Some(peer),
            payload_types: Default::default(),
        };
        let session = node
            .create(SessionRequest {
                id: SessionId::parse(&format!("bench-{i}")).unwrap(),
                call_id: format!("call-{i}"),
                tenant: "bench".into(),
                legs: [leg, leg],
            })
            .await
            .expect("create a session");
        pairs.push((session.legs[0].local_rtp, session.legs[1].local_rtp));
    }
    Relay {
        pairs,
        thread,
        _running: running,
    }
}

/// Runs one rung on one forwarder; true when it relayed everything and kept up.
fn rung(generator: &mut Generator, forwarder: &mut Forwarder, rate: u64) -> bool {
    let streams = (rate / STREAM_PPS) as usize;
    let cpu_before = (
        system::thread_cpu(forwarder.thread),
        system::cpu_jiffies(RELAY_CPU),
    );
    let step = generator.run(&forwarder.targets, streams, STEP, false);
    let used = system::thread_cpu(forwarder.thread) - cpu_before.0;
    let jiffies = system::cpu_jiffies(RELAY_CPU);
    let busy = (jiffies.0 - cpu_before.1.0) as f64 / (jiffies.1 - cpu_before.1.1).max(1) as f64;
    let share = used.as_secs_f64() / step.span.as_secs_f64();
    // Deep socket buffers absorb a short overload without loss, so a forwarder that did not
    // keep up shows as packets still arriving well after the last send.
    let kept_up = step.span.saturating_sub(step.send_time) < KEPT_UP;
    let passed = step.loss() < LOSS_LIMIT && kept_up;
    let note = match (passed, step.behind()) {
        (false, _) if !kept_up => "  fell behind",
        (false, _) => "  lost packets",
        (true, true) => "  generator behind",
        (true, false) => "",
    };
    println!(
        "  {:<30} {:>8} {:>11.0} {:>9.3} % {:>9.0} % {:>9.0} %{note}",
        forwarder.name,
        rate,
        step.relayed_pps(),
        step.loss() * 100.0,
        share * 100.0,
        busy * 100.0,
    );
    forwarder.generator_bound |= passed && step.behind();
    let climbing = passed && !step.behind();
    if passed {
        forwarder
            .cost
            .insert(rate, used.as_secs_f64() / step.received.max(1) as f64);
    }
    if passed && step.relayed_pps() > forwarder.best_pps() {
        forwarder.best = Some(step);
        forwarder.best_cpu = share;
    }
    climbing
}

/// Climbs the ladder, each rung on every forwarder still climbing.
fn climb(generator: &mut Generator, forwarders: &mut [Forwarder], run_start: Instant) {
    println!(
        "\n  {:<30} {:>8} {:>11} {:>11} {:>11} {:>11}",
        "forwarder", "offered", "relayed pps", "loss", "worker CPU", "CPU0 busy"
    );
    // Latches every leg before anything is measured.
    for forwarder in forwarders.iter() {
        generator.run(
            &forwarder.targets,
            forwarder.targets.len(),
            Duration::from_millis(300),
            false,
        );
    }
    for rate in (0..RUNGS).map(|i| FIRST_RATE + i * RATE_STEP) {
        for forwarder in forwarders.iter_mut().filter(|f| f.climbing) {
            if run_start.elapsed() > BUDGET {
                println!("  time budget spent");
                return;
            }
            forwarder.climbing = (0..TRIES).any(|_| rung(generator, forwarder, rate));
        }
        if forwarders.iter().all(|f| !f.climbing) {
            return;
        }
    }
}

/// Latency and CPU per packet at 80 % of the forwarder's best rate.
fn measure_latency(generator: &mut Generator, forwarder: &mut Forwarder) {
    let rate = forwarder.best_pps() * 0.8;
    if rate < STREAM_PPS as f64 {
        return;
    }
    let cpu_before = system::thread_cpu(forwarder.thread);
    let mut step = generator.run(
        &forwarder.targets,
        (rate / STREAM_PPS as f64) as usize,
        LATENCY_STEP,
        true,
    );
    let cpu_per_packet = (system::thread_cpu(forwarder.thread) - cpu_before).as_nanos() as f64
        / step.received as f64;
    let mut latencies = std::mem::take(&mut step.latencies_ns);
    // The first tenth warms caches and queues up.
    let latencies = latencies.split_off(latencies.len() / 10);
    let mut windows: Vec<u64> = latencies
        .chunks(latencies.len().div_ceil(WINDOWS).max(1))
        .filter_map(|window| percentile(&mut window.to_vec(), 0.99))
        .collect();
    let median_window = percentile(&mut windows, 0.5);
    let mut all = latencies;
    if let (Some(p50), Some(p99), Some(window_p99)) = (
        percentile(&mut all, 0.5),
        percentile(&mut all, 0.99),
        median_window,
    ) {
        println!(
            "  {}: at {:.0} pps (80 %) p50 {} µs, p99 {} µs (median {}-window p99 {} µs), {:.2} µs of worker CPU per packet, loss {:.3} %",
            forwarder.name,
            step.offered_pps(),
            p50 / 1000,
            p99 / 1000,
            WINDOWS,
            window_p99 / 1000,
            cpu_per_packet / 1000.0,
            step.loss() * 100.0
        );
        forwarder.latency = Some((p50, p99, window_p99, cpu_per_packet));
    }
}

/// The `q` quantile of `values` (sorted in place).
fn percentile(values: &mut [u64], q: f64) -> Option<u64> {
    values.sort_unstable();
    let index = ((values.len() as f64 * q) as usize).min(values.len().checked_sub(1)?);
    values.get(index).copied()
}

fn report(forwarders: &[Forwarder]) {
    println!(
        "\n{:<32} {:>12} {:>10} {:>10} {:>10} {:>16} {:>11}",
        "forwarder",
        "max pps/core",
        "worker CPU",
        "p50 @80 %",
        "p99 @80 %",
        "window p99 @80 %",
        "CPU/packet"
    );
    for f in forwarders {
        let (p50, p99, window_p99, per_packet) = f.latency.unwrap_or_default();
        println!(
            "{:<32} {:>12.0} {:>8.0} % {:>7} µs {:>7} µs {:>13} µs {:>8.2} µs{}",
            f.name,
            f.best_pps(),
            f.best_cpu * 100.0,
            p50 / 1000,
            p99 / 1000,
            window_p99 / 1000,
            per_packet / 1000.0,
            if f.generator_bound {
                "  (generator-bound: at least this)"
            } else {
                ""
            }
        );
    }
    if let [hot, per_leg, relays @ ..] = forwarders {
        let bound = |f: &Forwarder| if f.generator_bound { "≤ " } else { "" };
        println!(
            "\nthroughput against the references (target ≥ 90 % of the issue's reference, a plain recvmmsg/sendmmsg loop: the one-hot-socket one; a generator-bound reference makes the ratio an upper bound):"
        );
        for relay in relays {
            println!(
                "  {:<26} {}{:.1} % of the hot-socket reference, {:.1} % of the per-leg reference",
                relay.name,
                bound(hot),
                100.0 * relay.best_pps() / hot.best_pps().max(1.0),
                100.0 * relay.best_pps() / per_leg.best_pps().max(1.0),
            );
        }
        let per_packet = |f: &Forwarder| f.latency.map_or(0.0, |l| l.3);
        println!(
            "CPU per relayed packet at 80 % (generator-independent): {}",
            forwarders
                .iter()
                .map(|f| format!("{} {:.2} µs", f.name, per_packet(f) / 1000.0))
                .collect::<Vec<_>>()
                .join(", ")
        );
        // The same load for all: the highest rung that every forwarder passed.
        let measured: Vec<&Forwarder> = forwarders.iter().filter(|f| !f.cost.is_empty()).collect();
        let common = measured
            .iter()
            .map(|f| {
                f.cost
                    .keys()
                    .copied()
                    .collect::<std::collections::BTreeSet<u64>>()
            })
            .reduce(|a, b| &a & &b)
            .and_then(|rates| rates.last().copied());
        if let Some(rate) = common {
            println!(
                "CPU per relayed packet at the same load ({rate} pps, the highest rung all passed): {}",
                measured
                    .iter()
                    .map(|f| format!("{} {:.2} µs", f.name, f.cost[&rate] * 1e6))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        println!("targets: ≥ 300,000 pps per core, ≥ 90 % of the reference, p99 < 200 µs at 80 %");
    }
}

/// The relay's busy polling: `RELAY_BUSY_POLL_US` microseconds, default 0 (the default config).
fn busy_poll() -> Duration {
    let micros = std::env::var("RELAY_BUSY_POLL_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Duration::from_micros(micros)
}
