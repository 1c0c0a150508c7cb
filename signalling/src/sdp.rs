//! The part of SDP (RFC 4566, RFC 3264 offer/answer) a media-anchoring B2BUA needs: where a
//! party wants its audio, and the same description rewritten to point at a media-node leg.

use std::net::IpAddr;

/// Where and how a party receives audio, read from its SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioEndpoint {
    pub address: IpAddr,
    pub port: u16,
    /// RTP and RTCP on one port (RFC 5761).
    pub rtcp_mux: bool,
    /// Payload types of the `m=audio` line, in preference order.
    pub payload_types: Vec<u8>,
    /// `a=rtpmap` entries: (payload type, encoding, clock rate).
    pub rtpmaps: Vec<(u8, String, u32)>,
}

/// Why a description cannot be anchored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP has no m=audio line")]
    NoAudio,
    #[error("SDP has no usable c= address for its audio")]
    NoAddress,
    #[error("SDP line {0:?} is malformed")]
    Malformed(String),
}

/// The first audio stream of `sdp`.
pub fn audio_endpoint(sdp: &str) -> Result<AudioEndpoint, SdpError> {
    let mut session_address = None;
    let mut audio: Option<AudioEndpoint> = None;
    let mut media_address = None;
    let mut in_audio = false;
    for line in lines(sdp) {
        let Some((kind, value)) = line.split_once('=') else {
            continue;
        };
        match kind {
            "c" => {
                let address =
                    connection_address(value).ok_or_else(|| SdpError::Malformed(line.into()))?;
                if in_audio {
                    media_address = Some(address);
                } else if audio.is_none() {
                    session_address = Some(address);
                }
            }
            "m" => {
                if audio.is_some() {
                    in_audio = false;
                    continue;
                }
                let mut fields = value.split_ascii_whitespace();
                if fields.next() != Some("audio") {
                    in_audio = false;
                    continue;
                }
                let port = fields
                    .next()
                    .and_then(|p| p.split('/').next()?.parse().ok())
                    .ok_or_else(|| SdpError::Malformed(line.into()))?;
                let _protocol = fields.next();
                let payload_types = fields.filter_map(|f| f.parse().ok()).collect();
                in_audio = true;
                audio = Some(AudioEndpoint {
                    address: IpAddr::from([0, 0, 0, 0]),
                    port,
                    rtcp_mux: false,
                    payload_types,
                    rtpmaps: Vec::new(),
                });
            }
            "a" if in_audio => {
                let endpoint = audio.as_mut().expect("in an audio section");
                if value == "rtcp-mux" {
                    endpoint.rtcp_mux = true;
                } else if let Some(map) = value.strip_prefix("rtpmap:")
                    && let Some(entry) = rtpmap(map)
                {
                    endpoint.rtpmaps.push(entry);
                }
            }
            _ => {}
        }
    }
    let mut endpoint = audio.ok_or(SdpError::NoAudio)?;
    endpoint.address = media_address
        .or(session_address)
        .ok_or(SdpError::NoAddress)?;
    Ok(endpoint)
}

/// `sdp` with its audio pointed at `address:port` (a media-node leg): the connection and origin
/// addresses and the audio port are replaced, ICE candidates and explicit RTCP ports (which
/// would reveal the party behind the relay) are removed, everything else is kept.
pub fn anchor(sdp: &str, address: IpAddr, port: u16) -> String {
    let family = if address.is_ipv4() { "IP4" } else { "IP6" };
    let mut out = String::with_capacity(sdp.len());
    let mut audio_done = false;
    for line in lines(sdp) {
        let Some((kind, value)) = line.split_once('=') else {
            continue;
        };
        let rewritten = match kind {
            "o" => {
                let mut fields: Vec<&str> = value.split_ascii_whitespace().collect();
                if fields.len() == 6 {
                    fields[4] = family;
                    let address = address.to_string();
                    Some(format!(
                        "o={} {} {} {} {} {}",
                        fields[0], fields[1], fields[2], fields[3], fields[4], address
                    ))
                } else {
                    Some(line.to_string())
                }
            }
            "c" => Some(format!("c=IN {family} {address}")),
            "m" => {
                if !audio_done && value.starts_with("audio ") {
                    audio_done = true;
                    let mut fields = value.splitn(3, ' ');
                    let (media, _port, rest) = (
                        fields.next().unwrap_or(""),
                        fields.next(),
                        fields.next().unwrap_or(""),
                    );
                    Some(format!("m={media} {port} {rest}"))
                } else {
                    Some(line.to_string())
                }
            }
            "a" if value.starts_with("candidate:")
                || value.starts_with("ice-")
                || value.starts_with("end-of-candidates")
                || value.starts_with("rtcp:") =>
            {
                None
            }
            _ => Some(line.to_string()),
        };
        if let Some(line) = rewritten {
            out.push_str(&line);
            out.push_str("\r\n");
        }
    }
    out
}

/// `sdp` as a new version of the same session: the origin's version (RFC 4566 §5.2) plus one, so
/// that the party takes a re-offer with changed addresses as a change (RFC 3264 §8).
pub fn next_version(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len() + 2);
    for line in lines(sdp) {
        match line.strip_prefix("o=") {
            Some(origin) => {
                let mut fields: Vec<String> = origin
                    .split_ascii_whitespace()
                    .map(str::to_string)
                    .collect();
                if let Some(version) = fields.get_mut(2)
                    && let Ok(number) = version.parse::<u64>()
                {
                    *version = number.wrapping_add(1).to_string();
                }
                out.push_str("o=");
                out.push_str(&fields.join(" "));
            }
            None => out.push_str(line),
        }
        out.push_str("\r\n");
    }
    out
}

fn lines(sdp: &str) -> impl Iterator<Item = &str> {
    sdp.lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
}

/// `IN IP4 192.0.2.1` (a multicast `/ttl` suffix is dropped).
fn connection_address(value: &str) -> Option<IpAddr> {
    let mut fields = value.split_ascii_whitespace();
    (fields.next()? == "IN").then_some(())?;
    let _family = fields.next()?;
    fields.next()?.split('/').next()?.parse().ok()
}

/// `0 PCMU/8000` → (0, "PCMU", 8000).
fn rtpmap(value: &str) -> Option<(u8, String, u32)> {
    let (pt, rest) = value.split_once(' ')?;
    let mut parts = rest.split('/');
    Some((
        pt.parse().ok()?,
        parts.next()?.to_string(),
        parts.next()?.parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_next_version_bumps_only_the_origin_version() {
        let sdp = "v=0\r\no=- 42 7 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\n";
        assert_eq!(next_version(sdp), sdp.replace("o=- 42 7 IN", "o=- 42 8 IN"));
    }

    const OFFER: &str = "v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
        m=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
        a=rtcp:49171\r\na=candidate:1 1 UDP 2130706431 192.0.2.10 49170 typ host\r\na=ice-ufrag:abcd\r\na=sendrecv\r\n";

    #[test]
    fn the_audio_endpoint_is_read_from_the_session_connection_line() {
        let endpoint = audio_endpoint(OFFER).unwrap();
        assert_eq!(endpoint.address, "192.0.2.10".parse::<IpAddr>().unwrap());
        assert_eq!((endpoint.port, endpoint.rtcp_mux), (49170, false));
        assert_eq!(endpoint.payload_types, [0, 8, 101]);
        assert_eq!(endpoint.rtpmaps[2], (101, "telephone-event".into(), 8000));
    }

    #[test]
    fn a_media_level_connection_line_wins_and_rtcp_mux_is_seen() {
        let sdp = "v=0\r\nc=IN IP4 192.0.2.1\r\nm=video 5000 RTP/AVP 96\r\nc=IN IP4 192.0.2.9\r\nm=audio 6000 RTP/AVP 0\r\nc=IN IP6 2001:db8::7\r\na=rtcp-mux\r\n";
        let endpoint = audio_endpoint(sdp).unwrap();
        assert_eq!(endpoint.address, "2001:db8::7".parse::<IpAddr>().unwrap());
        assert_eq!((endpoint.port, endpoint.rtcp_mux), (6000, true));
    }

    #[test]
    fn descriptions_without_audio_or_address_are_refused() {
        assert_eq!(
            audio_endpoint("v=0\r\nc=IN IP4 192.0.2.1\r\nm=video 5000 RTP/AVP 96\r\n"),
            Err(SdpError::NoAudio)
        );
        assert_eq!(
            audio_endpoint("v=0\r\nm=audio 5000 RTP/AVP 0\r\n"),
            Err(SdpError::NoAddress)
        );
    }

    #[test]
    fn anchoring_points_audio_at_the_relay_and_hides_the_party() {
        let anchored = anchor(OFFER, "203.0.113.5".parse().unwrap(), 20000);
        let endpoint = audio_endpoint(&anchored).unwrap();
        assert_eq!(
            (endpoint.address.to_string().as_str(), endpoint.port),
            ("203.0.113.5", 20000)
        );
        assert_eq!(endpoint.payload_types, [0, 8, 101], "codecs are kept");
        assert!(
            !anchored.contains("192.0.2.10"),
            "nothing of the party's address is left: {anchored}"
        );
        assert!(
            !anchored.contains("candidate")
                && !anchored.contains("ice-")
                && !anchored.contains("a=rtcp:")
        );
        assert!(anchored.contains("a=sendrecv\r\n") && anchored.starts_with("v=0\r\n"));
    }

    #[test]
    fn anchoring_to_ipv6_changes_the_address_family() {
        let anchored = anchor(OFFER, "2001:db8::5".parse().unwrap(), 20002);
        assert!(anchored.contains("c=IN IP6 2001:db8::5\r\n"), "{anchored}");
        assert!(
            anchored.contains(" IN IP6 2001:db8::5\r\n"),
            "origin too: {anchored}"
        );
    }
}
