//! Between the MediaControl messages and the node's types: request validation (each error
//! names the field) and the replies.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use centrex_proto::media as pb;
use tonic::Status;

use crate::node::{NodeError, NodeStats};
use crate::relay::{LegStats, PayloadTypes};
use crate::session::{
    LegId, LegRequest, LegUpdate, MAX_ID_LEN, SessionId, SessionRequest, SessionView,
};

/// A request field that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidArgument {
    pub field: String,
    pub reason: String,
}

impl InvalidArgument {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<InvalidArgument> for Status {
    fn from(error: InvalidArgument) -> Self {
        Status::invalid_argument(error.to_string())
    }
}

impl From<NodeError> for Status {
    fn from(error: NodeError) -> Self {
        let message = error.to_string();
        match error {
            NodeError::Draining => Status::failed_precondition(message),
            NodeError::AtCapacity { .. } | NodeError::PortsExhausted { .. } => {
                Status::resource_exhausted(message)
            }
            NodeError::NotFound(_) => Status::not_found(message),
            NodeError::Conflict { .. } => Status::already_exists(message),
            NodeError::Bind { .. } | NodeError::Relay(_) => Status::unavailable(message),
        }
    }
}

/// Reads a session id field.
pub fn session_id(text: &str, field: &str) -> Result<SessionId, InvalidArgument> {
    SessionId::parse(text).map_err(|reason| InvalidArgument::new(field, reason))
}

fn bounded(text: String, field: &str) -> Result<String, InvalidArgument> {
    if text.len() > MAX_ID_LEN {
        return Err(InvalidArgument::new(
            field,
            "must be at most 256 characters",
        ));
    }
    Ok(text)
}

/// Reads an optional remote endpoint; an unspecified address (SDP hold, `0.0.0.0`) means not
/// known. `ipv4` is the node's address family, the only one it can send to.
fn remote(
    endpoint: Option<&pb::Endpoint>,
    field: &str,
    ipv4: bool,
) -> Result<Option<SocketAddr>, InvalidArgument> {
    let Some(endpoint) = endpoint else {
        return Ok(None);
    };
    let ip: IpAddr = endpoint.address.parse().map_err(|_| {
        InvalidArgument::new(
            format!("{field}.address"),
            format!("{:?} is not an IP address", endpoint.address),
        )
    })?;
    if ip.is_unspecified() {
        return Ok(None);
    }
    if ip.is_ipv4() != ipv4 {
        let family = if ipv4 { "IPv4" } else { "IPv6" };
        return Err(InvalidArgument::new(
            format!("{field}.address"),
            format!("this node relays {family} only"),
        ));
    }
    let port = u16::try_from(endpoint.port)
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| InvalidArgument::new(format!("{field}.port"), "must be 1-65535"))?;
    Ok(Some(SocketAddr::new(ip, port)))
}

/// Validates a CreateSession.
pub fn session_request(
    request: pb::CreateSessionRequest,
    ipv4: bool,
) -> Result<SessionRequest, InvalidArgument> {
    let id = session_id(&request.session_id, "session_id")?;
    if request.legs.len() != 2 {
        return Err(InvalidArgument::new(
            "legs",
            format!(
                "exactly two legs (\"a\" and \"b\") are needed, got {}",
                request.legs.len()
            ),
        ));
    }
    let mut legs: [Option<LegRequest>; 2] = [None, None];
    for (i, leg) in request.legs.iter().enumerate() {
        let field = format!("legs[{i}]");
        let leg_id = LegId::parse(&leg.leg_id).ok_or_else(|| {
            InvalidArgument::new(format!("{field}.leg_id"), "must be \"a\" or \"b\"")
        })?;
        let slot = &mut legs[leg_id.index()];
        if slot.is_some() {
            return Err(InvalidArgument::new(
                format!("{field}.leg_id"),
                format!("leg {:?} appears twice", leg.leg_id),
            ));
        }
        *slot = Some(LegRequest {
            rtcp_mux: leg.rtcp_mux,
            remote: remote(leg.remote.as_ref(), &format!("{field}.remote"), ipv4)?,
            payload_types: payload_types(&leg.payload_types, &format!("{field}.payload_types"))?,
        });
    }
    let [Some(a), Some(b)] = legs else {
        unreachable!("two distinct legs among \"a\" and \"b\" are both present");
    };
    Ok(SessionRequest {
        id,
        call_id: bounded(request.call_id, "call_id")?,
        tenant: bounded(request.tenant, "tenant")?,
        legs: [a, b],
    })
}

/// Validates an UpdateLeg.
pub fn leg_update(request: pb::UpdateLegRequest, ipv4: bool) -> Result<LegUpdate, InvalidArgument> {
    let id = session_id(&request.session_id, "session_id")?;
    let leg = LegId::parse(&request.leg_id)
        .ok_or_else(|| InvalidArgument::new("leg_id", "must be \"a\" or \"b\""))?;
    Ok(LegUpdate {
        id,
        leg,
        remote: remote(request.remote.as_ref(), "remote", ipv4)?,
        rtcp_mux: request.rtcp_mux,
        payload_types: payload_types(&request.payload_types, "payload_types")?,
    })
}

/// Reads the payload types SDP offered (none: any is relayed).
fn payload_types(
    offered: &[pb::PayloadType],
    field: &str,
) -> Result<PayloadTypes, InvalidArgument> {
    let mut ids = Vec::with_capacity(offered.len());
    for (i, payload_type) in offered.iter().enumerate() {
        let id = u8::try_from(payload_type.id)
            .ok()
            .filter(|&id| id < 128)
            .ok_or_else(|| InvalidArgument::new(format!("{field}[{i}].id"), "must be 0-127"))?;
        ids.push(id);
    }
    Ok(if ids.is_empty() {
        PayloadTypes::default()
    } else {
        PayloadTypes::only(ids)
    })
}

/// Reads a stats interval: 0 means one second.
pub fn stats_interval(interval_ms: u32) -> Result<Duration, InvalidArgument> {
    match interval_ms {
        0 => Ok(Duration::from_secs(1)),
        100..=60_000 => Ok(Duration::from_millis(u64::from(interval_ms))),
        _ => Err(InvalidArgument::new(
            "interval_ms",
            "must be 0 (one second) or 100-60000",
        )),
    }
}

/// Unix milliseconds of `time`.
pub fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn endpoint(address: SocketAddr) -> pb::Endpoint {
    pb::Endpoint {
        address: address.ip().to_string(),
        port: u32::from(address.port()),
    }
}

/// A leg's counters on the wire.
pub fn leg_counters(stats: &LegStats) -> pb::LegCounters {
    let c = &stats.counters;
    pb::LegCounters {
        packets_in: c.packets_in,
        bytes_in: c.bytes_in,
        packets_out: c.packets_out,
        bytes_out: c.bytes_out,
        packets_dropped: c.dropped,
        packets_lost: c.lost,
        last_activity_unix_ms: stats.last_activity.map_or(0, unix_ms),
    }
}

/// A session on the wire.
pub fn session(view: &SessionView) -> pb::Session {
    pb::Session {
        session_id: view.id.to_string(),
        call_id: view.call_id.clone(),
        created_unix_ms: unix_ms(view.created),
        legs: view
            .legs
            .iter()
            .map(|leg| pb::Leg {
                leg_id: leg.leg.as_str().into(),
                local_rtp: Some(endpoint(leg.local_rtp)),
                local_rtcp: Some(endpoint(leg.local_rtcp)),
                rtcp_mux: leg.rtcp_mux,
                remote: leg.remote.map(endpoint),
                latched: leg.stats.latched.is_some(),
                counters: Some(leg_counters(&leg.stats)),
            })
            .collect(),
    }
}

/// The node's figures on the wire.
pub fn node_stats(node_id: &str, stats: &NodeStats) -> pb::NodeStats {
    pb::NodeStats {
        node_id: node_id.to_string(),
        active_sessions: stats.active_sessions,
        capacity: stats.capacity,
        draining: stats.draining,
        packets_relayed: stats.packets_relayed,
        packets_dropped: stats.packets_dropped,
        packets_lost: stats.packets_lost,
        packets_per_second: stats.packets_per_second,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg(id: &str, address: &str, port: u32) -> pb::LegSpec {
        pb::LegSpec {
            leg_id: id.into(),
            rtcp_mux: true,
            remote: Some(pb::Endpoint {
                address: address.into(),
                port,
            }),
            payload_types: vec![],
        }
    }

    fn create(legs: Vec<pb::LegSpec>) -> pb::CreateSessionRequest {
        pb::CreateSessionRequest {
            session_id: "s1".into(),
            call_id: "c1".into(),
            tenant: "acme.example".into(),
            legs,
        }
    }

    fn field_of(request: pb::CreateSessionRequest) -> String {
        session_request(request, true).unwrap_err().field
    }

    #[test]
    fn legs_are_put_in_a_b_order_whatever_the_request_order() {
        let request = create(vec![
            leg("b", "192.0.2.2", 4000),
            leg("a", "192.0.2.1", 5000),
        ]);
        let session = session_request(request, true).unwrap();
        assert_eq!(
            session.legs[0].remote,
            Some("192.0.2.1:5000".parse().unwrap())
        );
    }

    #[test]
    fn a_hold_address_means_the_remote_is_not_known() {
        let request = create(vec![leg("a", "0.0.0.0", 4000), leg("b", "192.0.2.2", 4000)]);
        assert_eq!(session_request(request, true).unwrap().legs[0].remote, None);
    }

    #[test]
    fn each_invalid_field_is_named() {
        let mut empty_id = create(vec![leg("a", "192.0.2.1", 1), leg("b", "192.0.2.2", 1)]);
        empty_id.session_id.clear();
        assert_eq!(field_of(empty_id), "session_id");
        assert_eq!(field_of(create(vec![leg("a", "192.0.2.1", 1)])), "legs");
        assert_eq!(
            field_of(create(vec![
                leg("a", "192.0.2.1", 1),
                leg("c", "192.0.2.2", 1)
            ])),
            "legs[1].leg_id"
        );
        assert_eq!(
            field_of(create(vec![
                leg("a", "192.0.2.1", 1),
                leg("a", "192.0.2.2", 1)
            ])),
            "legs[1].leg_id"
        );
        assert_eq!(
            field_of(create(vec![
                leg("a", "pbx.example", 1),
                leg("b", "192.0.2.2", 1)
            ])),
            "legs[0].remote.address"
        );
        assert_eq!(
            field_of(create(vec![
                leg("a", "192.0.2.1", 1),
                leg("b", "192.0.2.2", 70000)
            ])),
            "legs[1].remote.port"
        );
        assert_eq!(
            field_of(create(vec![
                leg("a", "2001:db8::1", 1),
                leg("b", "192.0.2.2", 1)
            ])),
            "legs[0].remote.address"
        );
    }

    #[test]
    fn an_update_names_a_bad_payload_type() {
        let request = pb::UpdateLegRequest {
            session_id: "s1".into(),
            leg_id: "a".into(),
            remote: None,
            rtcp_mux: true,
            payload_types: vec![
                pb::PayloadType {
                    id: 0,
                    encoding: "PCMU".into(),
                    clock_rate: 8000,
                },
                pb::PayloadType {
                    id: 300,
                    encoding: "x".into(),
                    clock_rate: 8000,
                },
            ],
        };
        assert_eq!(
            leg_update(request, true).unwrap_err().field,
            "payload_types[1].id"
        );
    }

    #[test]
    fn node_errors_map_to_their_grpc_codes() {
        use tonic::Code;
        let code = |e: NodeError| Status::from(e).code();
        assert_eq!(code(NodeError::Draining), Code::FailedPrecondition);
        assert_eq!(
            code(NodeError::AtCapacity { capacity: 1 }),
            Code::ResourceExhausted
        );
        assert_eq!(
            code(NodeError::NotFound(SessionId::parse("x").unwrap())),
            Code::NotFound
        );
    }
}
