//! REGISTER handling: find the tenant, authenticate, plan, write the bindings, answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use centrex_coord::{Store, StoreError, random};

use super::bindings::{self, Binding};
use super::plan::{ContactRequest, Contacts, ExpiryPolicy, Plan, Refusal, plan};
use crate::auth::authenticator::{AuthOutcome, Authenticator};
use crate::directory::Directory;
use crate::sip::{Contact, HeaderName, Request, ResponseBuilder, StatusCode, Uri};

/// The registrar of one signalling instance.
pub struct Registrar {
    store: Arc<dyn Store>,
    directory: Directory,
    auth: Arc<Authenticator>,
    policy: ExpiryPolicy,
}

impl Registrar {
    /// A registrar writing bindings to `store` for the tenants of `directory`.
    pub fn new(
        store: Arc<dyn Store>,
        directory: Directory,
        auth: Arc<Authenticator>,
        policy: ExpiryPolicy,
    ) -> Self {
        Self {
            store,
            directory,
            auth,
            policy,
        }
    }

    /// Answers a REGISTER from `source`; `None` means drop it (a throttled source).
    pub async fn register(
        &self,
        request: &Request,
        source: SocketAddr,
        transport: &str,
    ) -> Option<Bytes> {
        let respond = |status: StatusCode| {
            ResponseBuilder::for_request(request, status).to_tag(random::token())
        };
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());

        let Some(domain) = request_domain(request) else {
            return build(
                respond(StatusCode::BAD_REQUEST)
                    .reason("Bad Request (the Request-URI must name the SIP domain)"),
            );
        };
        let Some(tenant) = self.directory.tenant(&domain) else {
            return build(respond(StatusCode::NOT_FOUND).reason("Not Found (no such domain)"));
        };
        let Some(aor_user) = aor_user(request, &domain) else {
            return build(
                respond(StatusCode::BAD_REQUEST)
                    .reason("Bad Request (To must be an address of this domain)"),
            );
        };
        let authorization = request.headers().get(HeaderName::Authorization);
        let method = request.method().to_string();
        match self.auth.authenticate(
            &method,
            authorization,
            &tenant,
            &aor_user,
            source.ip(),
            unix_now,
            Instant::now(),
        ) {
            AuthOutcome::Authenticated(_) => {}
            AuthOutcome::Challenge { stale } => {
                let challenges = self.auth.challenge(&tenant, stale, unix_now);
                let builder = challenges
                    .into_iter()
                    .fold(respond(StatusCode::UNAUTHORIZED), |b, c| {
                        b.header(HeaderName::WwwAuthenticate, c)
                    });
                return build(builder);
            }
            AuthOutcome::Forbidden => return build(respond(StatusCode::FORBIDDEN)),
            AuthOutcome::Throttled => return None,
        }

        let contacts = match contacts(request) {
            Ok(contacts) => contacts,
            Err(why) => {
                return build(
                    respond(StatusCode::BAD_REQUEST).reason(format!("Bad Request ({why})")),
                );
            }
        };
        let expires = request.headers().expires().and_then(Result::ok);
        let plan = match plan(contacts, expires, &self.policy) {
            Ok(plan) => plan,
            Err(Refusal::BadRequest(why)) => {
                return build(
                    respond(StatusCode::BAD_REQUEST).reason(format!("Bad Request ({why})")),
                );
            }
            Err(Refusal::IntervalTooBrief(min)) => {
                return build(
                    respond(StatusCode::INTERVAL_TOO_BRIEF)
                        .header(HeaderName::MinExpires, min.to_string()),
                );
            }
        };
        let call_id = request.headers().call_id().unwrap_or_default().to_string();
        let cseq = request.headers().cseq().map(|c| c.seq).unwrap_or_default();
        let origin = Origin {
            call_id,
            cseq,
            source: source.to_string(),
            transport: transport.to_string(),
        };
        match self
            .apply(&domain, &aor_user, plan, &origin, unix_now)
            .await
        {
            Ok(Applied::Bindings(current)) => {
                let builder = current.iter().fold(respond(StatusCode::OK), |b, binding| {
                    let remaining = binding.expires_at.saturating_sub(unix_now);
                    b.header(
                        HeaderName::Contact,
                        format!("<{}>;expires={remaining}", binding.contact),
                    )
                });
                build(builder)
            }
            Ok(Applied::TooManyBindings) => build(
                respond(StatusCode::FORBIDDEN).reason("Forbidden (too many registered contacts)"),
            ),
            Ok(Applied::OutOfOrder) => build(
                respond(StatusCode::SERVER_INTERNAL_ERROR)
                    .reason("Server Internal Error (out-of-order CSeq)"),
            ),
            Err(error) => {
                tracing::warn!(%error, domain, user = aor_user, "registration store unavailable");
                build(respond(StatusCode::SERVICE_UNAVAILABLE).header(HeaderName::RetryAfter, "5"))
            }
        }
    }

    async fn apply(
        &self,
        domain: &str,
        user: &str,
        plan: Plan,
        origin: &Origin,
        unix_now: u64,
    ) -> Result<Applied, StoreError> {
        let store = self.store.as_ref();
        let existing = bindings::list(store, domain, user).await?;
        match plan {
            Plan::Query => Ok(Applied::Bindings(
                existing.into_iter().map(|(b, _)| b).collect(),
            )),
            Plan::RemoveAll => {
                for (binding, _) in &existing {
                    bindings::remove(store, domain, user, &binding.contact).await?;
                }
                Ok(Applied::Bindings(Vec::new()))
            }
            Plan::Update(changes) => {
                let known = |contact: &str| existing.iter().any(|(b, _)| b.contact == contact);
                let added = changes.iter().filter(|(c, e)| *e > 0 && !known(c)).count();
                if existing.len() + added > self.policy.max_bindings {
                    return Ok(Applied::TooManyBindings);
                }
                // RFC 3261 §10.3 step 7: a replayed or reordered REGISTER must not roll a binding back.
                let stale = changes.iter().any(|(contact, _)| {
                    existing.iter().any(|(b, _)| {
                        &b.contact == contact
                            && b.call_id == origin.call_id
                            && b.cseq >= origin.cseq
                    })
                });
                if stale {
                    return Ok(Applied::OutOfOrder);
                }
                let mut current: Vec<Binding> = existing
                    .iter()
                    .filter(|(b, _)| !changes.iter().any(|(c, _)| *c == b.contact))
                    .map(|(b, _)| b.clone())
                    .collect();
                for (contact, expires) in changes {
                    if expires == 0 {
                        bindings::remove(store, domain, user, &contact).await?;
                        continue;
                    }
                    let replaced = existing
                        .iter()
                        .find(|(b, _)| b.contact == contact)
                        .and_then(|(_, lease)| *lease);
                    let binding = Binding {
                        contact,
                        expires_at: unix_now + u64::from(expires),
                        call_id: origin.call_id.clone(),
                        cseq: origin.cseq,
                        source: origin.source.clone(),
                        transport: origin.transport.clone(),
                    };
                    bindings::put(
                        store,
                        domain,
                        user,
                        &binding,
                        Duration::from_secs(expires.into()),
                        replaced,
                    )
                    .await?;
                    current.push(binding);
                }
                Ok(Applied::Bindings(current))
            }
        }
    }
}

/// Where a REGISTER came from, recorded in its bindings.
struct Origin {
    call_id: String,
    cseq: u32,
    source: String,
    transport: String,
}

enum Applied {
    Bindings(Vec<Binding>),
    TooManyBindings,
    OutOfOrder,
}

/// The domain a REGISTER's Request-URI names (lowercase).
fn request_domain(request: &Request) -> Option<String> {
    match request.uri().ok()? {
        Uri::Sip(uri) => Some(uri.host().to_string().to_ascii_lowercase()),
        _ => None,
    }
}

/// The user part of the To address, when To is an address of `domain`.
fn aor_user(request: &Request, domain: &str) -> Option<String> {
    let to = request.headers().to().ok()?;
    let Uri::Sip(uri) = to.uri() else { return None };
    (uri.host().to_string().eq_ignore_ascii_case(domain)).then_some(())?;
    uri.user().map(str::to_string)
}

/// The Contact header field of a request.
fn contacts(request: &Request) -> Result<Contacts, &'static str> {
    let mut list = Vec::new();
    let mut wildcard = false;
    for contact in request.headers().contacts() {
        match contact.map_err(|_| "malformed Contact")? {
            Contact::Wildcard => wildcard = true,
            contact @ Contact::Address(address) => list.push(ContactRequest {
                uri: address.uri().as_str().to_string(),
                expires: contact.expires().and_then(Result::ok),
            }),
        }
    }
    match (wildcard, list.is_empty()) {
        (true, true) => Ok(Contacts::Wildcard),
        (true, false) => Err("Contact: * must stand alone"),
        (false, true) => Ok(Contacts::None),
        (false, false) => Ok(Contacts::List(list)),
    }
}

fn build(builder: ResponseBuilder) -> Option<Bytes> {
    match builder.build() {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            tracing::warn!(%error, "cannot build a response");
            None
        }
    }
}
