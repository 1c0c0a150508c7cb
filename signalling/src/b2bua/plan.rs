//! What a call rings, stage by stage: the Centrex features (forwarding, hunt groups, fixed–mobile
//! convergence, outbound through a trunk) turned into the phones and carriers to INVITE now, and
//! what to try when they do not answer. The decisions are the pure functions of
//! [`crate::routing`]; this module adds what they need from the world: registered phones, call
//! counters and trunks.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use centrex_coord::snapshot::{TenantSnapshot, TrunkSnapshot, UserEntry};

use super::limits::{Held, Limits};
use crate::directory::Directory;
use crate::registrar::bindings;
use crate::routing::forwarding::{self, Condition, ForwardChain};
use crate::routing::hunt;
use crate::routing::numbers::{self, NumberPlan};
use crate::routing::target::{self, Target};
use crate::sip::StatusCode;
use crate::transport::{Peer, Transport};
use centrex_coord::Store;

/// One phone or carrier to INVITE.
#[derive(Debug, Clone)]
pub struct Branch {
    /// Request-URI.
    pub uri: String,
    /// To header (without tag).
    pub to: String,
    pub destination: Peer,
    /// Who answers on it: an extension, or the trunk and number (the call record's
    /// `answered_by`, and whose counters stay with the call when it answers).
    pub party: String,
    /// Set when the branch leaves through a trunk (digest towards the carrier, caller ID rules).
    pub trunk: Option<Arc<TrunkSnapshot>>,
}

/// Branches rung together.
#[derive(Debug, Default)]
pub struct Stage {
    pub branches: Vec<Branch>,
    /// How long they ring before the plan moves on; `None`: until they answer or give up.
    pub ring: Option<Duration>,
    /// Counters taken for the stage's parties: `(party, counters)`.
    pub held: Vec<(String, Held)>,
    /// The hunt group being rung, for the call record.
    pub hunt_group: Option<String>,
    /// The user whose forwarding led here, for the call record.
    pub forwarded_from: Option<String>,
}

/// How a stage ended without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every branch said busy (486, 600, 603).
    Busy,
    /// The ring time passed, or the branches failed otherwise.
    NoAnswer,
}

/// Nothing (more) to ring: the caller's final answer, or `None` to relay the best failure the
/// branches gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhausted(pub Option<(StatusCode, String)>);

/// What the plan needs from the instance.
#[derive(Clone)]
pub struct World {
    pub store: Arc<dyn Store>,
    pub directory: Directory,
    pub limits: Arc<Limits>,
    /// Round-robin positions of hunt groups, by `<domain>/<extension>`.
    pub rotations: Arc<super::Rotations>,
}

/// Steps waiting their turn.
#[derive(Debug)]
enum Next {
    /// The next members of a hunt group.
    Members {
        group: String,
        members: Vec<String>,
        ring: Duration,
    },
    /// A forward (or overflow) target, with the user or group it comes from.
    Forward { target: Target, from: String },
    /// Nothing answered and nothing is left: this answer.
    Fail(StatusCode, String),
}

/// The ringing plan of one call.
pub struct Plan {
    world: World,
    tenant: Arc<TenantSnapshot>,
    call_id: String,
    chain: ForwardChain,
    queue: VecDeque<Next>,
    /// Where the current stage goes when everybody is busy (a user's busy forward).
    on_busy: Option<Next>,
    /// Where the current stage goes when nobody answers (a user's no-answer forward).
    on_no_answer: Option<Next>,
}

impl Plan {
    /// The plan of a call to `target` in `tenant`.
    pub fn new(world: World, tenant: Arc<TenantSnapshot>, call_id: String, target: Target) -> Self {
        Self {
            world,
            tenant,
            call_id,
            chain: ForwardChain::new(target.clone()),
            queue: VecDeque::from([Next::Forward {
                target,
                from: String::new(),
            }]),
            on_busy: None,
            on_no_answer: None,
        }
    }

    /// The first stage.
    pub async fn first(&mut self) -> Result<Stage, Exhausted> {
        self.advance().await
    }

    /// The stage after one that ended with `outcome`.
    pub async fn next(&mut self, outcome: Outcome) -> Result<Stage, Exhausted> {
        let (on_busy, on_no_answer) = (self.on_busy.take(), self.on_no_answer.take());
        let instead = match outcome {
            Outcome::Busy => on_busy,
            Outcome::NoAnswer => on_no_answer,
        };
        if let Some(step) = instead {
            self.queue.push_front(step);
        }
        self.advance().await
    }

    /// Expands queued steps until one gives something to ring.
    async fn advance(&mut self) -> Result<Stage, Exhausted> {
        // Each step is bounded (forward hops, group members), so this ends.
        while let Some(step) = self.queue.pop_front() {
            (self.on_busy, self.on_no_answer) = (None, None);
            let stage = match step {
                Next::Fail(status, reason) => return Err(Exhausted(Some((status, reason)))),
                Next::Members {
                    group,
                    members,
                    ring,
                } => self.members(&group, &members, ring).await,
                Next::Forward { target, from } => {
                    let first = from.is_empty();
                    if !first && let Err(looped) = self.chain.follow(&target) {
                        tracing::info!(call_id = self.call_id, %looped, "forward not followed");
                        self.queue.push_front(Next::Fail(
                            StatusCode::TEMPORARILY_UNAVAILABLE,
                            "forwarding loop".into(),
                        ));
                        continue;
                    }
                    let mut stage = self.target(target).await?;
                    if let Some(stage) = stage.as_mut()
                        && !first
                    {
                        stage.forwarded_from.get_or_insert(from);
                    }
                    stage
                }
            };
            if let Some(stage) = stage {
                return Ok(stage);
            }
        }
        Err(Exhausted(None))
    }

    /// Expands a target: `None` when it queued what comes instead (a forward, an overflow).
    async fn target(&mut self, target: Target) -> Result<Option<Stage>, Exhausted> {
        match target {
            Target::User(extension) => Ok(self.user(&extension).await),
            Target::Group(extension) => Ok(self.group(&extension).await),
            Target::External(number) => self.external(&number).await.map(Some),
        }
    }

    /// A user: their always-forward, or their phones (and mobile) with the busy, no-answer and
    /// unavailable forwards queued behind.
    async fn user(&mut self, extension: &str) -> Option<Stage> {
        let tenant = self.tenant.clone();
        let Some(user) = tenant.user(extension) else {
            self.fail(StatusCode::NOT_FOUND, "no such extension");
            return None;
        };
        if self.forward(user, Condition::Always) {
            return None;
        }
        let mut held = Held::default();
        match self
            .world
            .limits
            .hold_user_into(&mut held, &tenant.domain, user, &self.call_id)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                if !self.forward(user, Condition::Busy) {
                    self.fail(StatusCode::BUSY_HERE, "busy");
                }
                return None;
            }
            Err(error) => {
                tracing::warn!(%error, "call counters unavailable");
                self.fail(StatusCode::SERVICE_UNAVAILABLE, "call counters unavailable");
                return None;
            }
        }
        let mut branches = self.phones(user).await;
        let mut stage = Stage::default();
        if let Some(mobile) = user.mobile_number.clone() {
            // Fixed–mobile convergence: the mobile rings with the desk phones when outbound
            // calling allows it; a refusal only leaves the desk phones.
            match self.external(&mobile).await {
                Ok(mut mobile) => {
                    branches.append(&mut mobile.branches);
                    stage.held.append(&mut mobile.held);
                }
                Err(Exhausted(refusal)) => {
                    tracing::info!(call_id = self.call_id, ?refusal, "mobile not rung")
                }
            }
        }
        if branches.is_empty() {
            self.world.limits.release(held).await;
            if !self.forward(user, Condition::Unavailable) {
                self.fail(StatusCode::TEMPORARILY_UNAVAILABLE, "no registered phone");
            }
            return None;
        }
        stage.held.push((user.extension.clone(), held));
        stage.branches = branches;
        stage.ring = forwarding::no_answer_after(user);
        self.on_busy = self.forward_step(user, Condition::Busy);
        self.on_no_answer = self.forward_step(user, Condition::NoAnswer);
        Some(stage)
    }

    /// Queues `user`'s forward for `condition`; `false` when they have none (or it names
    /// nothing in the tenant).
    fn forward(&mut self, user: &UserEntry, condition: Condition) -> bool {
        let Some(step) = self.forward_step(user, condition) else {
            return false;
        };
        self.queue.push_front(step);
        true
    }

    fn forward_step(&self, user: &UserEntry, condition: Condition) -> Option<Next> {
        let target = forwarding::forward_target(user, condition)
            .and_then(|t| target::parse_forward_target(&self.tenant, t))?;
        Some(Next::Forward {
            target,
            from: user.extension.clone(),
        })
    }

    /// A hunt group: its stages queued (members who are busy or unregistered skipped), then
    /// its overflow.
    async fn group(&mut self, extension: &str) -> Option<Stage> {
        let tenant = self.tenant.clone();
        let Some(group) = tenant.hunt_groups.iter().find(|g| g.extension == extension) else {
            self.fail(StatusCode::NOT_FOUND, "no such extension");
            return None;
        };
        let mut available = Vec::new();
        for member in &group.members {
            if self.available(member).await {
                available.push(member.clone());
            }
        }
        let rotation = self
            .world
            .rotations
            .next(&format!("{}/{}", tenant.domain, group.extension));
        let stages = hunt::stages(group, rotation, |m| available.iter().any(|a| a == m));
        let mut steps: VecDeque<Next> = stages
            .into_iter()
            .map(|stage| Next::Members {
                group: group.extension.clone(),
                members: stage.members,
                ring: stage.ring,
            })
            .collect();
        // Without overflow the caller hears how the last stage ended: busy (486) or no answer
        // (480); 480 when no member could be rung at all.
        if let Some(target) = group
            .overflow
            .as_deref()
            .and_then(|t| target::parse_forward_target(&tenant, t))
        {
            steps.push_back(Next::Forward {
                target,
                from: group.extension.clone(),
            });
        }
        while let Some(step) = steps.pop_back() {
            self.queue.push_front(step);
        }
        None
    }

    /// A member can be rung: registered and below their call limit.
    async fn available(&self, extension: &str) -> bool {
        let Some(user) = self.tenant.user(extension) else {
            return false;
        };
        let busy = self
            .world
            .limits
            .user_busy(&self.tenant.domain, user)
            .await
            .unwrap_or(true);
        !busy && !self.phones(user).await.is_empty()
    }

    /// Members of a hunt group rung now (each taking a slot of their own; one who became busy
    /// or unregistered since is left out).
    async fn members(&mut self, group: &str, members: &[String], ring: Duration) -> Option<Stage> {
        let tenant = self.tenant.clone();
        let mut stage = Stage {
            ring: Some(ring),
            hunt_group: Some(group.to_string()),
            ..Stage::default()
        };
        for member in members {
            let Some(user) = tenant.user(member) else {
                continue;
            };
            let phones = self.phones(user).await;
            if phones.is_empty() {
                continue;
            }
            let mut held = Held::default();
            let limits = &self.world.limits;
            let free = limits.hold_user_into(&mut held, &tenant.domain, user, &self.call_id);
            if let Ok(true) = free.await {
                stage.branches.extend(phones);
                stage.held.push((member.clone(), held));
            }
        }
        (!stage.branches.is_empty()).then_some(stage)
    }

    /// The registered phones of `user`.
    async fn phones(&self, user: &UserEntry) -> Vec<Branch> {
        let domain = &self.tenant.domain;
        let found = match bindings::list(self.world.store.as_ref(), domain, &user.extension).await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, "bindings unavailable");
                return Vec::new();
            }
        };
        found
            .into_iter()
            .filter_map(|(binding, _)| {
                let destination = Peer {
                    addr: binding.source.parse().ok()?,
                    transport: Transport::parse(&binding.transport)?,
                };
                Some(Branch {
                    uri: binding.contact,
                    to: format!("<sip:{}@{domain}>", user.extension),
                    destination,
                    party: user.extension.clone(),
                    trunk: None,
                })
            })
            .collect()
    }

    /// A number outside the tenant, through its first outbound trunk that has a free channel;
    /// refused when outbound calling or the destination class is not allowed.
    async fn external(&mut self, dialled: &str) -> Result<Stage, Exhausted> {
        let tenant = self.tenant.clone();
        let refuse =
            |status: StatusCode, reason: &str| Err(Exhausted(Some((status, reason.into()))));
        let Some(policy) = &tenant.outbound else {
            return refuse(
                StatusCode::FORBIDDEN,
                "outbound calls are not enabled for this tenant",
            );
        };
        let namespace = &tenant.source.namespace;
        let trunks: Vec<Arc<TrunkSnapshot>> = policy
            .trunks
            .iter()
            .filter_map(|name| self.world.directory.trunk(namespace, name))
            .collect();
        let Some(first) = trunks.first() else {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "no outbound trunk is ready",
            );
        };
        let route = numbers::outbound_decision(policy, &NumberPlan::from_trunk(first), dialled)
            .map_err(|refusal| {
                tracing::info!(call_id = self.call_id, %refusal, "outbound call refused");
                Exhausted(Some((refusal.status(), refusal.reason().to_string())))
            })?;
        let mut last = None;
        for trunk in trunks {
            match self.world.limits.hold_trunk(&trunk, &self.call_id).await {
                Ok(held) => {
                    let Some(destination) = carrier(&trunk).await else {
                        self.world.limits.release(held).await;
                        last = Some("cannot resolve the carrier's address");
                        continue;
                    };
                    let uri = format!(
                        "sip:{}@{}:{};user=phone",
                        route.number, trunk.host, trunk.port
                    );
                    let party = format!("{}/{}", trunk.source.name, route.number);
                    return Ok(Stage {
                        branches: vec![Branch {
                            to: format!("<{uri}>"),
                            uri,
                            destination,
                            party: party.clone(),
                            trunk: Some(trunk.clone()),
                        }],
                        ring: None,
                        held: vec![(party, held)],
                        hunt_group: None,
                        forwarded_from: None,
                    });
                }
                Err(refusal) => {
                    tracing::info!(trunk = trunk.source.name, %refusal, "trunk skipped");
                    last = Some(match refusal {
                        super::limits::Refusal::TrunkRate => "trunk calls-per-second limit reached",
                        _ => "trunk channels all in use",
                    });
                }
            }
        }
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            last.unwrap_or("no outbound trunk is ready"),
        )
    }

    fn fail(&mut self, status: StatusCode, reason: &str) {
        self.queue.push_front(Next::Fail(status, reason.into()));
    }
}

/// Where a trunk's carrier is reached (its host may be a name). UDP only for now: over TCP we
/// answer on connections peers open but do not open our own yet.
async fn carrier(trunk: &TrunkSnapshot) -> Option<Peer> {
    if trunk.transport != centrex_coord::snapshot::Transport::Udp {
        tracing::warn!(trunk = trunk.source.name, transport = ?trunk.transport, "only UDP trunks are served yet");
        return None;
    }
    let transport = Transport::Udp;
    let addr: SocketAddr = tokio::net::lookup_host((trunk.host.as_str(), trunk.port))
        .await
        .ok()?
        .next()?;
    Some(Peer { addr, transport })
}
