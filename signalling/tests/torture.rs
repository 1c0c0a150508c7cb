//! RFC 4475 torture messages (files in `tests/torture/`) through the datagram ingress path:
//! parse, validate, and answer or drop what fails.

use std::path::Path;

use bytes::Bytes;
use centrex_signalling::sip::{
    Contact, DropReason, Frame, HeaderName, Host, Limits, Message, Method, Rejection, Response,
    Scheme, StatusCode, Transport, Uri, canonical, frame_length, percent_decode, rejection,
};

/// What RFC 4475 asks of an element receiving the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Well-formed for this layer: it parses and validates.
    Accept,
    /// Answered with this status, the reason phrase mentioning the given text.
    Answer(u16, &'static str),
    /// Dropped without an answer.
    Drop(DropReason),
}

use Expect::{Accept, Answer, Drop};

/// Every message, its RFC 4475 section and the outcome the RFC asks for (where the RFC leaves a
/// choice, the comment says which one is made).
const CASES: &[(&str, &str, Expect)] = &[
    // §3.1.1 valid messages: parsers must accept them.
    ("wsinv", "3.1.1.1", Accept),
    ("intmeth", "3.1.1.2", Accept),
    ("esc01", "3.1.1.3", Accept),
    ("escnull", "3.1.1.4", Accept),
    ("esc02", "3.1.1.5", Accept),
    ("lwsdisp", "3.1.1.6", Accept),
    ("longreq", "3.1.1.7", Accept),
    ("dblreq", "3.1.1.8", Accept),
    ("semiuri", "3.1.1.9", Accept),
    ("transports", "3.1.1.10", Accept),
    ("mpart01", "3.1.1.11", Accept),
    ("unreason", "3.1.1.12", Accept),
    ("noreason", "3.1.1.13", Accept),
    // §3.1.2 invalid messages.
    ("badinv01", "3.1.2.1", Answer(400, "Via")),
    ("clerr", "3.1.2.2", Answer(400, "Content-Length")),
    ("ncl", "3.1.2.3", Answer(400, "Content-Length")),
    ("scalar02", "3.1.2.4", Answer(400, "CSeq")),
    ("scalarlg", "3.1.2.5", Drop(DropReason::NotARequest)),
    ("quotbal", "3.1.2.6", Answer(400, "To")),
    ("ltgtruri", "3.1.2.7", Answer(400, "Request-URI")),
    ("lwsruri", "3.1.2.8", Answer(400, "Request-URI")),
    // "Acceptable to reject": this stack is strict about the Request-Line.
    ("lwsstart", "3.1.2.9", Answer(400, "white space")),
    ("trws", "3.1.2.10", Answer(400, "white space")),
    ("escruri", "3.1.2.11", Answer(400, "Request-URI")),
    // Rejecting is acceptable only if the Date mattered; it does not at this layer.
    ("baddate", "3.1.2.12", Accept),
    ("regbadct", "3.1.2.13", Answer(400, "Contact")),
    ("badaspec", "3.1.2.14", Answer(400, "To")),
    ("baddn", "3.1.2.15", Answer(400, "From")),
    ("badvers", "3.1.2.16", Answer(505, "version")),
    ("mismatch01", "3.1.2.17", Answer(400, "CSeq")),
    ("mismatch02", "3.1.2.18", Answer(501, "CSeq")),
    ("bigcode", "3.1.2.19", Drop(DropReason::NotARequest)),
    // §3.2 transaction layer: the parser must not break; the branch is for the transactions.
    ("badbranch", "3.2.1", Accept),
    // §3.3 application layer. insuf lacks Call-ID, From and To: the RFC asks for a 400, but a
    // response without them cannot be matched by the client, so it is dropped.
    (
        "insuf",
        "3.3.1",
        Drop(DropReason::Unanswerable(HeaderName::From)),
    ),
    ("unkscm", "3.3.2", Answer(416, "scheme")),
    ("novelsc", "3.3.3", Answer(416, "scheme")),
    ("unksm2", "3.3.4", Accept),
    ("bext01", "3.3.5", Accept),
    ("invut", "3.3.6", Accept),
    ("regaut01", "3.3.7", Accept),
    ("multi01", "3.3.8", Answer(400, "more than one")),
    ("mcl01", "3.3.9", Answer(400, "Content-Length")),
    ("bcast", "3.3.10", Accept),
    ("zeromf", "3.3.11", Accept),
    ("cparam01", "3.3.12", Accept),
    ("cparam02", "3.3.13", Accept),
    ("regescrt", "3.3.14", Accept),
    ("sdp01", "3.3.15", Accept),
    // §3.4 backward compatibility: no Max-Forwards, no Content-Length over UDP, no branch.
    ("inv2543", "3.4.1", Accept),
];

fn load(name: &str) -> Bytes {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/torture")
        .join(format!("{name}.dat"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into()
}

/// The datagram ingress path: what a UDP listener will do with the bytes.
enum Outcome {
    Accepted(Message),
    Answered(Box<Response>),
    Dropped(DropReason),
}

fn ingress(bytes: Bytes) -> Outcome {
    let limits = Limits::default();
    let checked = Message::parse(bytes.clone(), &limits).and_then(|msg| {
        match &msg {
            Message::Request(r) => r.validate(&limits)?,
            Message::Response(r) => r.validate(&limits)?,
        }
        Ok(msg)
    });
    match checked {
        Ok(msg) => Outcome::Accepted(msg),
        Err(error) => match rejection(&bytes, &error, &limits) {
            Rejection::Respond(response) => Outcome::Answered(response),
            Rejection::Drop(reason) => Outcome::Dropped(reason),
        },
    }
}

fn accepted(name: &str) -> Message {
    match ingress(load(name)) {
        Outcome::Accepted(msg) => msg,
        _ => panic!("{name} not accepted"),
    }
}

#[test]
fn every_torture_message_gets_the_outcome_rfc_4475_asks_for() {
    let failures: Vec<String> = CASES
        .iter()
        .filter_map(|&(name, section, expect)| {
            let got = match ingress(load(name)) {
                Outcome::Accepted(_) => Accept,
                Outcome::Answered(r)
                    if r.reason().contains(match expect {
                        Answer(_, text) => text,
                        _ => "",
                    }) =>
                {
                    Answer(
                        r.status().as_u16(),
                        match expect {
                            Answer(_, text) => text,
                            _ => "",
                        },
                    )
                }
                Outcome::Answered(r) => {
                    return Some(format!(
                        "{name} (§{section}): answered {} {}",
                        r.status(),
                        r.reason()
                    ));
                }
                Outcome::Dropped(reason) => Drop(reason),
            };
            (got != expect)
                .then(|| format!("{name} (§{section}): expected {expect:?}, got {got:?}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn answers_copy_the_request_fields_and_route_to_its_via() {
    let Outcome::Answered(response) = ingress(load("badvers")) else {
        panic!("not answered")
    };
    let h = response.headers();
    assert_eq!(response.status(), StatusCode::VERSION_NOT_SUPPORTED);
    assert_eq!(h.call_id(), Ok("badvers.31417@c.example.com"));
    assert_eq!(h.cseq().unwrap().method, Method::Options);
    assert_eq!(h.from().unwrap().tag(), Some("qweoiqpe"));
    assert!(h.to().unwrap().tag().is_some());
    assert_eq!(h.top_via().unwrap().host(), Host::Domain("c.example.com"));
}

#[test]
fn the_answer_to_a_retransmission_is_the_same() {
    let (Outcome::Answered(a), Outcome::Answered(b)) =
        (ingress(load("quotbal")), ingress(load("quotbal")))
    else {
        panic!("not answered")
    };
    assert_eq!(a.as_bytes(), b.as_bytes());
}

#[test]
fn wsinv_reads_through_folds_white_space_and_compact_forms() {
    let Message::Request(r) = accepted("wsinv") else {
        panic!()
    };
    let h = r.headers();
    assert_eq!(r.method(), &Method::Invite);
    let Uri::Sip(uri) = r.uri().unwrap() else {
        panic!()
    };
    assert_eq!(uri.params().get("unknownparam"), Some(None));
    assert_eq!(h.to().unwrap().tag(), Some("1918181833n"));
    let from = h.from().unwrap();
    assert_eq!(from.display_name().unwrap().text(), r#"J Rosenberg \""#);
    assert_eq!(from.tag(), Some("98asjd8"));
    assert_eq!(h.max_forwards(), Ok(Some(68)));
    assert_eq!(h.call_id(), Ok("wsinv.ndaksdj@192.0.2.1"));
    assert_eq!(
        (h.cseq().unwrap().seq, h.cseq().unwrap().method),
        (9, Method::Invite)
    );
    let vias: Vec<_> = h.vias().map(Result::unwrap).collect();
    assert_eq!(vias.len(), 3);
    assert_eq!(
        (vias[0].transport(), vias[0].branch()),
        (Transport::Udp, Some("390skdjuw"))
    );
    assert_eq!(
        (vias[1].host(), vias[1].branch()),
        (Host::Domain("spindle.example.com"), Some("z9hG4bK9ikj8"))
    );
    assert_eq!(vias[2].branch(), Some("z9hG4bK30239"));
    assert_eq!(h.get(HeaderName::Subject), Some(""));
    let fangled = h.iter().find(|f| f.is_named("NewFangledHeader")).unwrap();
    assert_eq!(
        fangled.value_unfolded(),
        "newfangled value continued newfangled value"
    );
    assert_eq!(
        h.extension("unknownheaderwithunusualvalue").next(),
        Some(";;,,;;,;")
    );
    let Contact::Address(contact) = h.contacts().next().unwrap().unwrap() else {
        panic!()
    };
    assert_eq!(
        contact.display_name().unwrap().text(),
        r#"Quoted string """#
    );
    assert_eq!(contact.params().get("newparam"), Some(Some("newvalue")));
    assert_eq!(contact.params().get("secondparam"), Some(None));
    assert_eq!(Contact::Address(contact).q(), Some(330));
    assert!(
        h.routes()
            .next()
            .unwrap()
            .unwrap()
            .uri()
            .as_sip()
            .unwrap()
            .is_loose_router()
    );
    assert_eq!(r.body().len(), 150);
}

#[test]
fn intmeth_keeps_unusual_characters_verbatim() {
    let Message::Request(r) = accepted("intmeth") else {
        panic!()
    };
    let h = r.headers();
    assert_eq!(
        r.method().as_str(),
        "!interesting-Method0123456789_*+`.%indeed'~"
    );
    let Uri::Sip(uri) = r.uri().unwrap() else {
        panic!()
    };
    assert_eq!(
        uri.user(),
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    assert_eq!(
        uri.password(),
        Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
    );
    assert_eq!(
        h.to().unwrap().display_name().unwrap().text(),
        "BEL:\u{7} NUL:\0 DEL:\u{7f}"
    );
    let from = h.from().unwrap();
    assert_eq!(from.tag(), Some("_token~1'+`*%!-."));
    assert_eq!(
        from.params().get("fromParam''~+*_!.-%"),
        Some(Some("\"работающий\""))
    );
    assert_eq!(
        from.display_name().unwrap().as_raw(),
        "token1~` token2'+_ token3*%!.-"
    );
    assert_eq!(
        h.call_id(),
        Ok("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{")
    );
    assert_eq!(h.max_forwards(), Ok(Some(255)));
    assert_eq!(
        h.extension("extensionHeader-!.%*+_`'~").next(),
        Some("\u{feff}大停電")
    );
    assert_eq!(h.top_via().unwrap().branch(), Some("z9hG4bK-.!%66*_+`'~"));
}

#[test]
fn escapes_are_kept_and_decode_only_where_they_are_escapes() {
    let Message::Request(r) = accepted("esc01") else {
        panic!()
    };
    let Uri::Sip(uri) = r.uri().unwrap() else {
        panic!()
    };
    assert_eq!(
        percent_decode(uri.user().unwrap()).as_ref(),
        b"sips:user@example.com"
    );
    let to = r.headers().to().unwrap();
    assert_eq!(
        percent_decode(to.uri().as_sip().unwrap().user().unwrap()).as_ref(),
        b"user"
    );
    assert_eq!(r.headers().content_type(), Some("application/sdp"));
    let contact = r.headers().contacts().next().unwrap().unwrap();
    let params = contact.address().unwrap().uri().as_sip().unwrap().params();
    assert_eq!(params.get("n%61me"), Some(Some("v%61lue%25%34%31")));

    let Message::Request(r) = accepted("escnull") else {
        panic!()
    };
    let users: Vec<_> = r
        .headers()
        .contacts()
        .map(|c| {
            percent_decode(
                c.unwrap()
                    .address()
                    .unwrap()
                    .uri()
                    .as_sip()
                    .unwrap()
                    .user()
                    .unwrap(),
            )
            .into_owned()
        })
        .collect();
    assert_eq!(users, [b"\0".to_vec(), b"\0\0".to_vec()]);

    let Message::Request(r) = accepted("esc02") else {
        panic!()
    };
    assert!(matches!(r.method(), Method::Extension(_)));
    assert_eq!(
        r.headers().to().unwrap().display_name().unwrap().text(),
        "%Z%45"
    );
    assert_eq!(r.headers().contacts().count(), 2);
    assert_eq!(r.headers().extension("C%6Fntact").count(), 1);
}

#[test]
fn long_values_and_many_vias_in_every_spelling() {
    let Message::Request(r) = accepted("longreq") else {
        panic!()
    };
    let h = r.headers();
    let hosts: Vec<_> = h.vias().map(|v| v.unwrap().host().to_string()).collect();
    assert_eq!(hosts.len(), 34);
    assert_eq!(hosts[0], "sip33.example.com");
    assert_eq!(hosts[33], "host.example.com");
    assert_eq!(h.to().unwrap().uri().as_sip().unwrap().port(), Some(6000));
    assert_eq!(h.from().unwrap().tag().unwrap().len(), 155);
    assert_eq!(
        h.vias().last().unwrap().unwrap().received(),
        Some("192.0.2.5".parse().unwrap())
    );
}

#[test]
fn trailing_datagram_octets_are_not_part_of_the_message() {
    let Message::Request(r) = accepted("dblreq") else {
        panic!()
    };
    assert_eq!(r.method(), &Method::Register);
    assert!(r.body().is_empty());
    assert!(!String::from_utf8_lossy(&r.as_bytes()).contains("INVITE"));
}

#[test]
fn user_part_parameters_lists_and_transports() {
    let Message::Request(r) = accepted("semiuri") else {
        panic!()
    };
    let Uri::Sip(uri) = r.uri().unwrap() else {
        panic!()
    };
    assert_eq!(uri.user(), Some("user;par=u%40example.net"));
    assert!(uri.params().is_empty());
    assert_eq!(r.headers().values(HeaderName::Accept).count(), 6);

    let Message::Request(r) = accepted("transports") else {
        panic!()
    };
    let transports: Vec<_> = r
        .headers()
        .vias()
        .map(|v| v.unwrap().transport().as_str())
        .collect();
    assert_eq!(transports, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
}

#[test]
fn binary_body_is_framed_by_content_length() {
    let Message::Request(r) = accepted("mpart01") else {
        panic!()
    };
    assert_eq!(r.body().len(), 553);
    assert!(r.body().contains(&0));
    assert!(r.body().ends_with(b"--7a9cbec02ceef655--\r\n"));
    assert_eq!(r.headers().top_via().unwrap().rport(), Some(None));
}

#[test]
fn responses_with_unusual_or_empty_reason_phrases() {
    let Message::Response(r) = accepted("unreason") else {
        panic!()
    };
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.reason(),
        "= 2**3 * 5**2 но сто девяносто девять - простое"
    );
    let Message::Response(r) = accepted("noreason") else {
        panic!()
    };
    assert_eq!((r.status(), r.reason()), (StatusCode::TRYING, ""));
}

#[test]
fn application_layer_cases_expose_what_the_layers_above_decide_on() {
    let Message::Request(r) = accepted("unksm2") else {
        panic!()
    };
    assert_eq!(r.headers().to().unwrap().uri().scheme(), Scheme::Other);
    let Message::Request(r) = accepted("zeromf") else {
        panic!()
    };
    assert_eq!(r.headers().max_forwards(), Ok(Some(0)));
    let Message::Request(r) = accepted("badbranch") else {
        panic!()
    };
    assert!(r.headers().top_via().unwrap().has_rfc3261_branch());
    let Message::Request(r) = accepted("cparam01") else {
        panic!()
    };
    let contact = r.headers().contacts().next().unwrap().unwrap();
    assert_eq!(
        contact.address().unwrap().params().get("unknownparam"),
        Some(None)
    );
    let Message::Request(r) = accepted("inv2543") else {
        panic!()
    };
    assert_eq!(r.headers().max_forwards(), Ok(None));
    assert_eq!(r.body().len(), 105);
    let Message::Response(r) = accepted("bcast") else {
        panic!()
    };
    assert_eq!(
        r.headers().vias().nth(1).unwrap().unwrap().host(),
        Host::Ipv4("255.255.255.255".parse().unwrap())
    );
}

#[test]
fn every_accepted_message_survives_a_canonical_round_trip() {
    let limits = Limits::default();
    for &(name, _, expect) in CASES {
        if expect != Accept {
            continue;
        }
        let msg = accepted(name);
        let again =
            Message::parse(canonical(&msg), &limits).unwrap_or_else(|e| panic!("{name}: {e}"));
        let view = |m: &Message| -> Vec<(HeaderName, String)> {
            m.headers()
                .iter()
                .filter(|h| h.name != HeaderName::ContentLength)
                .map(|h| (h.name, h.value_unfolded().into_owned()))
                .collect()
        };
        assert_eq!(view(&msg), view(&again), "{name}");
        assert_eq!(msg.body(), again.body(), "{name}");
        assert_eq!(canonical(&again), canonical(&msg), "{name}");
    }
}

#[test]
fn stream_framing_of_the_corpus() {
    let limits = Limits::default();
    let wsinv = load("wsinv");
    assert_eq!(
        frame_length(&wsinv, &limits),
        Ok(Frame::Complete(wsinv.len()))
    );
    let dblreq = load("dblreq");
    assert_eq!(
        frame_length(&dblreq, &limits),
        Ok(Frame::Complete(dblreq.len() - 446))
    );
    // On a stream, a Content-Length beyond the data means waiting for more (RFC 4475 §3.1.2.2).
    assert_eq!(frame_length(&load("clerr"), &limits), Ok(Frame::Incomplete));
    assert!(frame_length(&load("ncl"), &limits).is_err());
    assert!(frame_length(&load("mcl01"), &limits).is_err());
    assert!(frame_length(&load("inv2543"), &limits).is_err());
}

#[test]
fn contact_expires_overflow_is_left_to_the_registrar() {
    let msg = Message::parse(load("scalar02"), &Limits::default()).unwrap();
    let contact = msg.headers().contacts().next().unwrap().unwrap();
    assert!(contact.expires().unwrap().is_err());
    assert!(msg.headers().expires().unwrap().is_err());
}
