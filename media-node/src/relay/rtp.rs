//! The little of RTP and RTCP the relay reads: which of the two a datagram is (RFC 5761 §4, for
//! multiplexed ports), its SSRC and, for RTP, its sequence number and payload type.

/// A datagram the relay recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet {
    /// An RTP packet (RFC 3550 §5.1).
    Rtp {
        ssrc: u32,
        seq: u16,
        payload_type: u8,
    },
    /// An RTCP compound packet; `ssrc` is its first packet's sender.
    Rtcp { ssrc: u32 },
}

impl Packet {
    /// The SSRC of the packet's source.
    pub fn ssrc(self) -> u32 {
        match self {
            Packet::Rtp { ssrc, .. } | Packet::Rtcp { ssrc } => ssrc,
        }
    }
}

/// Reads the fixed header; `None` when the datagram is neither RTP nor RTCP (too short, or not
/// version 2: STUN, DTLS or noise).
pub fn parse(datagram: &[u8]) -> Option<Packet> {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(
            datagram.get(at..at + 4)?.try_into().ok()?,
        ))
    };
    let (&first, &second) = (datagram.first()?, datagram.get(1)?);
    if first >> 6 != 2 {
        return None;
    }
    // RFC 5761 §4: RTCP packet types 192–223 are where RTP would have the marker bit set with a
    // payload type of 64–95, which a multiplexing peer must not use.
    if (192..=223).contains(&second) {
        return Some(Packet::Rtcp { ssrc: word(4)? });
    }
    let ssrc = word(8)?;
    Some(Packet::Rtp {
        ssrc,
        seq: u16::from_be_bytes([datagram[2], datagram[3]]),
        payload_type: second & 0x7f,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(seq: u16, ssrc: u32, payload_type: u8) -> Vec<u8> {
        let mut packet = vec![0x80, payload_type];
        packet.extend(seq.to_be_bytes());
        packet.extend(160u32.to_be_bytes());
        packet.extend(ssrc.to_be_bytes());
        packet.extend([0xd5; 160]);
        packet
    }

    #[test]
    fn an_rtp_packet_yields_its_sequence_number_ssrc_and_payload_type() {
        assert_eq!(
            parse(&rtp(0xbeef, 0x1234_5678, 8)),
            Some(Packet::Rtp {
                ssrc: 0x1234_5678,
                seq: 0xbeef,
                payload_type: 8
            })
        );
    }

    #[test]
    fn the_marker_bit_is_not_part_of_the_payload_type() {
        let mut packet = rtp(1, 7, 101);
        packet[1] |= 0x80;
        assert!(matches!(
            parse(&packet),
            Some(Packet::Rtp {
                payload_type: 101,
                ..
            })
        ));
    }

    #[test]
    fn a_sender_report_is_rtcp_with_its_sender_ssrc() {
        let packet = [0x80, 200, 0, 6, 0xde, 0xad, 0xbe, 0xef];
        assert_eq!(parse(&packet), Some(Packet::Rtcp { ssrc: 0xdead_beef }));
    }

    #[test]
    fn short_or_non_version_2_datagrams_are_not_media() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&rtp(1, 1, 0)[..11]), None);
        assert_eq!(parse(&[0x80, 201, 0, 1]), None);
        // A STUN binding request starts with two zero bits.
        let mut stun = rtp(1, 1, 0);
        stun[0] = 0x00;
        assert_eq!(parse(&stun), None);
    }
}
