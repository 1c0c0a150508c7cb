//! Property tests: generated messages, written in the many ways the grammar allows (compact and
//! long names in any case, folds, white space around colons, list values in one field or many),
//! parse back to what was generated; and no input makes the parser panic.

mod common;

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::Bytes;
use centrex_signalling::sip::{
    Contact, HeaderName, Host, Limits, Message, Method, RequestBuilder, ResponseBuilder,
    StatusCode, Uri,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum HostSpec {
    Domain(String),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

impl HostSpec {
    fn write(&self) -> String {
        match self {
            Self::Domain(d) => d.clone(),
            Self::V4(a) => a.to_string(),
            Self::V6(a) => format!("[{a}]"),
        }
    }

    fn matches(&self, host: Host<'_>) -> bool {
        match (self, host) {
            (Self::Domain(d), Host::Domain(h)) => d == h,
            (Self::V4(a), Host::Ipv4(h)) => *a == h,
            (Self::V6(a), Host::Ipv6(h)) => *a == h,
            _ => false,
        }
    }
}

#[derive(Clone, Debug)]
struct UriSpec {
    secure: bool,
    user: Option<String>,
    host: HostSpec,
    port: Option<u16>,
    params: Vec<(String, Option<String>)>,
}

impl UriSpec {
    fn write(&self) -> String {
        let mut s = String::from(if self.secure { "sips:" } else { "sip:" });
        if let Some(user) = &self.user {
            let _ = write!(s, "{user}@");
        }
        s.push_str(&self.host.write());
        if let Some(port) = self.port {
            let _ = write!(s, ":{port}");
        }
        for (name, value) in &self.params {
            let _ = write!(s, ";{name}");
            if let Some(value) = value {
                let _ = write!(s, "={value}");
            }
        }
        s
    }

    fn check(&self, uri: &Uri<'_>) {
        let sip = uri.as_sip().expect("a SIP URI");
        assert_eq!(sip.is_secure(), self.secure);
        assert_eq!(sip.user(), self.user.as_deref());
        assert!(
            self.host.matches(sip.host()),
            "{:?} vs {:?}",
            self.host,
            sip.host()
        );
        assert_eq!(sip.port(), self.port);
        let params: Vec<_> = sip
            .params()
            .iter()
            .map(|(n, v)| (n.to_owned(), v.map(str::to_owned)))
            .collect();
        assert_eq!(params, self.params);
    }
}

#[derive(Clone, Debug)]
enum Display {
    Tokens(Vec<String>),
    Quoted(String),
}

#[derive(Clone, Debug)]
struct AddrSpec {
    display: Option<Display>,
    uri: UriSpec,
    tag: Option<String>,
}

impl AddrSpec {
    fn write(&self) -> String {
        let mut s = String::new();
        match &self.display {
            Some(Display::Tokens(tokens)) => {
                let _ = write!(s, "{} ", tokens.join(" "));
            }
            Some(Display::Quoted(text)) => {
                let escaped: String = text
                    .chars()
                    .flat_map(|c| {
                        if matches!(c, '"' | '\\') {
                            vec!['\\', c]
                        } else {
                            vec![c]
                        }
                    })
                    .collect();
                let _ = write!(s, "\"{escaped}\" ");
            }
            None => {}
        }
        let _ = write!(s, "<{}>", self.uri.write());
        if let Some(tag) = &self.tag {
            let _ = write!(s, " ;tag={tag}");
        }
        s
    }

    fn check(&self, addr: &centrex_signalling::sip::NameAddr<'_>) {
        let display = addr.display_name().map(|d| d.text().into_owned());
        let expected = match &self.display {
            Some(Display::Tokens(tokens)) => Some(tokens.join(" ")),
            Some(Display::Quoted(text)) => Some(text.clone()),
            None => None,
        };
        assert_eq!(display, expected);
        self.uri.check(&addr.uri());
        assert_eq!(addr.tag(), self.tag.as_deref());
    }
}

#[derive(Clone, Debug)]
struct ViaSpec {
    transport: &'static str,
    host: HostSpec,
    port: Option<u16>,
    branch: String,
    rport: bool,
}

impl ViaSpec {
    fn write(&self, fold: bool) -> String {
        let sep = if fold { "\r\n   " } else { " " };
        let mut s = format!("SIP/2.0/{}{sep}{}", self.transport, self.host.write());
        if let Some(port) = self.port {
            let _ = write!(s, ":{port}");
        }
        let _ = write!(s, ";branch={}", self.branch);
        if self.rport {
            s.push_str(";rport");
        }
        s
    }
}

#[derive(Clone, Debug)]
enum StartSpec {
    Request {
        method: Method,
        uri: UriSpec,
    },
    Response {
        code: u16,
        reason: String,
        method: Method,
    },
}

/// How the message is written.
#[derive(Clone, Debug)]
struct Style {
    compact: bool,
    name_case: u8,
    space_before_colon: bool,
    fold: bool,
    vias_in_one_field: bool,
}

#[derive(Clone, Debug)]
struct Spec {
    start: StartSpec,
    vias: Vec<ViaSpec>,
    from: AddrSpec,
    to: AddrSpec,
    call_id: String,
    cseq: u32,
    max_forwards: Option<u8>,
    contacts: Vec<AddrSpec>,
    extensions: Vec<(String, String)>,
    body: Vec<u8>,
    style: Style,
}

impl Spec {
    fn method(&self) -> &Method {
        match &self.start {
            StartSpec::Request { method, .. } | StartSpec::Response { method, .. } => method,
        }
    }

    fn name(&self, name: HeaderName) -> String {
        let base = match name.compact() {
            Some(c) if self.style.compact => c.to_string(),
            _ => name.as_str().to_owned(),
        };
        match self.style.name_case % 3 {
            0 => base,
            1 => base.to_ascii_lowercase(),
            _ => base.to_ascii_uppercase(),
        }
    }

    fn write(&self) -> Bytes {
        let mut s = match &self.start {
            StartSpec::Request { method, uri } => format!("{method} {} SIP/2.0\r\n", uri.write()),
            StartSpec::Response { code, reason, .. } => format!("SIP/2.0 {code} {reason}\r\n"),
        };
        let colon = if self.style.space_before_colon {
            " : "
        } else {
            ": "
        };
        let mut field = |name: String, value: &str| {
            let _ = write!(s, "{name}{colon}{value}\r\n");
        };
        if self.style.vias_in_one_field {
            let vias: Vec<_> = self.vias.iter().map(|v| v.write(self.style.fold)).collect();
            field(self.name(HeaderName::Via), &vias.join(" , "));
        } else {
            for via in &self.vias {
                field(self.name(HeaderName::Via), &via.write(self.style.fold));
            }
        }
        field(self.name(HeaderName::From), &self.from.write());
        field(self.name(HeaderName::To), &self.to.write());
        field(self.name(HeaderName::CallId), &self.call_id);
        let cseq = if self.style.fold {
            format!("{}\r\n\t{}", self.cseq, self.method())
        } else {
            format!("{} {}", self.cseq, self.method())
        };
        field(self.name(HeaderName::CSeq), &cseq);
        if let Some(mf) = self.max_forwards {
            field(self.name(HeaderName::MaxForwards), &mf.to_string());
        }
        for contact in &self.contacts {
            field(self.name(HeaderName::Contact), &contact.write());
        }
        for (name, value) in &self.extensions {
            field(name.clone(), value);
        }
        if !self.body.is_empty() {
            field(
                self.name(HeaderName::ContentType),
                "application/octet-stream",
            );
        }
        field(
            self.name(HeaderName::ContentLength),
            &self.body.len().to_string(),
        );
        let mut bytes = s.into_bytes();
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(&self.body);
        bytes.into()
    }

    /// Checks a parsed message against the spec.
    fn check(&self, msg: &Message) {
        let limits = Limits::default();
        match (&self.start, msg) {
            (StartSpec::Request { method, uri }, Message::Request(r)) => {
                assert_eq!(r.method(), method);
                uri.check(&r.uri().unwrap());
                r.validate(&limits).unwrap();
            }
            (StartSpec::Response { code, reason, .. }, Message::Response(r)) => {
                assert_eq!(r.status().as_u16(), *code);
                assert_eq!(r.reason(), reason);
                r.validate(&limits).unwrap();
            }
            _ => panic!("wrong kind of message"),
        }
        let h = msg.headers();
        let vias: Vec<_> = h.vias().map(Result::unwrap).collect();
        assert_eq!(vias.len(), self.vias.len());
        for (via, spec) in vias.iter().zip(&self.vias) {
            assert!(spec.host.matches(via.host()));
            assert_eq!(via.port(), spec.port);
            assert_eq!(via.transport().as_str(), spec.transport);
            assert_eq!(via.branch(), Some(spec.branch.as_str()));
            assert_eq!(via.rport(), spec.rport.then_some(None));
        }
        self.from.check(&h.from().unwrap());
        self.to.check(&h.to().unwrap());
        assert_eq!(h.call_id(), Ok(self.call_id.as_str()));
        let cseq = h.cseq().unwrap();
        assert_eq!((cseq.seq, &cseq.method), (self.cseq, self.method()));
        assert_eq!(h.max_forwards(), Ok(self.max_forwards));
        let contacts: Vec<_> = h.contacts().map(Result::unwrap).collect();
        assert_eq!(contacts.len(), self.contacts.len());
        for (contact, spec) in contacts.iter().zip(&self.contacts) {
            let Contact::Address(addr) = contact else {
                panic!("wildcard")
            };
            spec.check(addr);
        }
        for (name, value) in &self.extensions {
            assert!(h.extension(name).any(|v| v == value), "{name}: {value:?}");
        }
        assert_eq!(msg.body().as_ref(), self.body.as_slice());
    }
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9.!%*_+`'~-]{1,10}"
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        prop::sample::select(vec![
            Method::Invite,
            Method::Register,
            Method::Options,
            Method::Bye,
            Method::Message
        ]),
        "[A-Z][A-Z0-9%!-]{0,9}".prop_map(|t| t.parse().unwrap()),
    ]
}

fn host() -> impl Strategy<Value = HostSpec> {
    prop_oneof![
        "[a-z]([a-z0-9-]{0,6}[a-z0-9])?(\\.[a-z]([a-z0-9-]{0,6}[a-z0-9])?){0,3}"
            .prop_map(HostSpec::Domain),
        any::<[u8; 4]>().prop_map(|a| HostSpec::V4(a.into())),
        any::<u128>().prop_map(|a| HostSpec::V6(a.into())),
    ]
}

fn uri() -> impl Strategy<Value = UriSpec> {
    (
        any::<bool>(),
        prop::option::of("([a-zA-Z0-9_.!~*'()&=+$,;?/-]|%[0-9A-F]{2}){1,12}"),
        host(),
        prop::option::of(any::<u16>()),
        prop::collection::vec(
            (
                "[a-z][a-z0-9-]{0,8}",
                prop::option::of("[a-zA-Z0-9.-]{1,8}"),
            ),
            0..3,
        ),
    )
        .prop_map(|(secure, user, host, port, params)| UriSpec {
            secure,
            user,
            host,
            port,
            params,
        })
}

fn addr() -> impl Strategy<Value = AddrSpec> {
    let display = prop_oneof![
        Just(None),
        prop::collection::vec(token(), 1..3).prop_map(|t| Some(Display::Tokens(t))),
        "[ -~\u{a0}-\u{3ff}]{0,16}".prop_map(|t| Some(Display::Quoted(t))),
    ];
    (display, uri(), prop::option::of(token())).prop_map(|(display, uri, tag)| AddrSpec {
        display,
        uri,
        tag,
    })
}

fn via() -> impl Strategy<Value = ViaSpec> {
    (
        prop::sample::select(vec!["UDP", "TCP", "TLS", "WS"]),
        host(),
        prop::option::of(any::<u16>()),
        token(),
        any::<bool>(),
    )
        .prop_map(|(transport, host, port, branch, rport)| ViaSpec {
            transport,
            host,
            port,
            branch: format!("z9hG4bK{branch}"),
            rport,
        })
}

fn spec() -> impl Strategy<Value = Spec> {
    let start = prop_oneof![
        (method(), uri()).prop_map(|(method, uri)| StartSpec::Request { method, uri }),
        (100u16..700, "[ -~]{0,20}", method()).prop_map(|(code, reason, method)| {
            StartSpec::Response {
                code,
                reason,
                method,
            }
        }),
    ];
    let style = (
        any::<bool>(),
        any::<u8>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(compact, name_case, space_before_colon, fold, vias_in_one_field)| Style {
                compact,
                name_case,
                space_before_colon,
                fold,
                vias_in_one_field,
            },
        );
    let extensions = prop::collection::vec(
        (
            "X-[A-Za-z0-9-]{1,10}",
            "[!-~\u{a0}-\u{2fff}]([ -~\u{a0}-\u{2fff}]{0,20}[!-~])?",
        ),
        0..3,
    );
    (
        (start, prop::collection::vec(via(), 1..4), addr(), addr()),
        (
            "[a-zA-Z0-9.!%*_+`'~()<>:\\\\\"/\\[\\]?{}-]{1,20}(@[a-z0-9.]{1,10})?",
            any::<u32>(),
            prop::option::of(any::<u8>()),
        ),
        (
            prop::collection::vec(addr(), 0..3),
            extensions,
            prop::collection::vec(any::<u8>(), 0..64),
            style,
        ),
    )
        .prop_map(
            |(
                (start, vias, from, to),
                (call_id, cseq, max_forwards),
                (contacts, extensions, body, style),
            )| Spec {
                start,
                vias,
                from,
                to,
                call_id,
                cseq,
                max_forwards,
                contacts,
                extensions,
                body,
                style,
            },
        )
}

/// The spec as a builder would write it (one field per value, long names).
fn build(spec: &Spec) -> Bytes {
    macro_rules! fields {
        ($builder:expr) => {{
            let mut b = $builder;
            for via in &spec.vias {
                b = b.header(HeaderName::Via, via.write(false));
            }
            b = b
                .header(HeaderName::From, spec.from.write())
                .header(HeaderName::To, spec.to.write())
                .header(HeaderName::CallId, spec.call_id.clone())
                .header(HeaderName::CSeq, format!("{} {}", spec.cseq, spec.method()));
            if let Some(mf) = spec.max_forwards {
                b = b.header(HeaderName::MaxForwards, mf.to_string());
            }
            for contact in &spec.contacts {
                b = b.header(HeaderName::Contact, contact.write());
            }
            for (name, value) in &spec.extensions {
                b = b.extension_header(name.clone(), value.clone());
            }
            if !spec.body.is_empty() {
                b = b.body("application/octet-stream", Bytes::from(spec.body.clone()));
            }
            b.build().unwrap()
        }};
    }
    match &spec.start {
        StartSpec::Request { method, uri } => {
            fields!(RequestBuilder::new(method.clone(), uri.write()))
        }
        StartSpec::Response { code, reason, .. } => {
            fields!(ResponseBuilder::new(StatusCode::new(*code).unwrap()).reason(reason.clone()))
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn written_messages_parse_back_to_what_was_written(spec in spec()) {
        let msg = Message::parse(spec.write(), &Limits::default()).unwrap();
        spec.check(&msg);
        prop_assert!(common::exercise(msg.as_bytes()));
    }

    #[test]
    fn built_messages_parse_back_to_what_was_built(spec in spec()) {
        let msg = Message::parse(build(&spec), &Limits::default()).unwrap();
        spec.check(&msg);
    }

    #[test]
    fn parser_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        common::exercise(bytes.into());
    }

    #[test]
    fn parser_never_panics_on_damaged_messages(
        spec in spec(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), prop::sample::select(b"\r\n \t:;,\"<>[]@%=\\\0\xff/?".to_vec())), 1..6),
    ) {
        let mut bytes = spec.write().to_vec();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        common::exercise(bytes.into());
    }
}
