//! Cross-object validation of a Tenant: what CEL on one object cannot see. Pure: takes the tenant
//! and what it references or competes with, returns the resolved inputs or every problem found.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::Timestamp;

use crate::crd::{Tenant, TrunkSpec};
use crate::validation::FieldError;

/// Shortest SIP password accepted: short ones fall to online guessing (toll fraud).
pub const MIN_PASSWORD_LEN: usize = 8;

/// Everything a tenant is checked against, fetched by the controller.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Secrets of the tenant's namespace it references: name → key → bytes.
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// Trunks of the tenant's namespace.
    pub trunks: BTreeMap<String, TrunkSpec>,
    /// SignallingPool names of the tenant's namespace.
    pub signalling_pools: BTreeSet<String>,
    /// MediaPool names of the tenant's namespace.
    pub media_pools: BTreeSet<String>,
    /// Every other tenant of the cluster.
    pub rivals: Vec<Rival>,
}

/// Another tenant, as far as uniqueness rules care.
#[derive(Debug, Clone)]
pub struct Rival {
    /// `namespace/name`.
    pub key: String,
    pub created: Option<Timestamp>,
    pub domain: String,
    pub numbers: Vec<String>,
}

/// What validation resolved, for compilation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Password of each user, in `spec.users` order.
    pub passwords: Vec<Vec<u8>>,
    /// Trunk delivering each number, in `spec.numbers` order.
    pub number_trunks: Vec<String>,
}

/// Checks `tenant` against `inputs`; on success returns what compilation needs.
pub fn validate(tenant: &Tenant, inputs: &Inputs) -> Result<Resolved, Vec<FieldError>> {
    let spec = &tenant.spec;
    let mut errors = Vec::new();
    let namespace = tenant.metadata.namespace.as_deref().unwrap_or("default");

    if !inputs.signalling_pools.contains(&spec.signalling_pool_ref) {
        errors.push(FieldError::new(
            "spec.signallingPoolRef",
            format!(
                "SignallingPool {:?} not found in namespace {namespace}",
                spec.signalling_pool_ref
            ),
        ));
    }
    if !inputs.media_pools.contains(&spec.media_pool_ref) {
        errors.push(FieldError::new(
            "spec.mediaPoolRef",
            format!(
                "MediaPool {:?} not found in namespace {namespace}",
                spec.media_pool_ref
            ),
        ));
    }
    for (i, trunk) in spec
        .outbound
        .iter()
        .flat_map(|o| o.trunk_refs.iter())
        .enumerate()
    {
        if !inputs.trunks.contains_key(trunk) {
            errors.push(FieldError::new(
                format!("spec.outbound.trunkRefs[{i}]"),
                format!("Trunk {trunk:?} not found in namespace {namespace}"),
            ));
        }
    }

    let me = Claim {
        key: key_of(tenant),
        created: created_of(tenant),
    };
    for rival in inputs
        .rivals
        .iter()
        .filter(|r| r.key != me.key && me.yields_to(r))
    {
        if rival.domain == spec.domain {
            errors.push(FieldError::new(
                "spec.domain",
                format!(
                    "{} is already the domain of Tenant {}",
                    spec.domain, rival.key
                ),
            ));
        }
    }
    for (i, number) in spec.numbers.iter().enumerate() {
        if let Some(rival) = inputs
            .rivals
            .iter()
            .find(|r| r.key != me.key && me.yields_to(r) && r.numbers.contains(&number.number))
        {
            errors.push(FieldError::new(
                format!("spec.numbers[{i}].number"),
                format!(
                    "{} is already claimed by Tenant {}",
                    number.number, rival.key
                ),
            ));
        }
    }

    let users: BTreeSet<&str> = spec.users.iter().map(|u| u.extension.as_str()).collect();
    let groups: BTreeSet<&str> = spec
        .hunt_groups
        .iter()
        .map(|g| g.extension.as_str())
        .collect();
    let has_outbound = spec.outbound.is_some();
    let check_target = |field: String, target: &str, errors: &mut Vec<FieldError>| {
        if target.starts_with('+') {
            if !has_outbound {
                errors.push(FieldError::new(
                    field,
                    format!("{target} is an external number: it needs spec.outbound with a trunk"),
                ));
            }
        } else if !users.contains(target) && !groups.contains(target) {
            errors.push(FieldError::new(
                field,
                format!("no user or hunt group has extension {target}"),
            ));
        }
    };

    let mut passwords = Vec::with_capacity(spec.users.len());
    for (i, user) in spec.users.iter().enumerate() {
        let field = format!("spec.users[{i}]");
        match password(
            inputs,
            &user.password_secret_ref.name,
            &user.password_secret_ref.key,
        ) {
            Ok(secret) => passwords.push(secret.to_vec()),
            Err(message) => errors.push(FieldError::new(
                format!("{field}.passwordSecretRef"),
                message,
            )),
        }
        if user.caller_id == crate::crd::CallerIdPresentation::MainNumber
            && spec.main_number.is_none()
        {
            errors.push(FieldError::new(
                format!("{field}.callerId"),
                "mainNumber presentation needs spec.mainNumber",
            ));
        }
        if user.mobile_number.is_some() && !has_outbound {
            errors.push(FieldError::new(
                format!("{field}.mobileNumber"),
                "ringing a mobile needs spec.outbound with a trunk",
            ));
        }
        if let Some(f) = &user.forwarding {
            for (rule, target) in [
                ("always", &f.always),
                ("busy", &f.busy),
                ("unavailable", &f.unavailable),
            ] {
                if let Some(target) = target {
                    check_target(format!("{field}.forwarding.{rule}"), target, &mut errors);
                }
            }
            if let Some(no_answer) = &f.no_answer {
                check_target(
                    format!("{field}.forwarding.noAnswer.target"),
                    &no_answer.target,
                    &mut errors,
                );
            }
        }
    }

    for (i, group) in spec.hunt_groups.iter().enumerate() {
        for (j, member) in group.members.iter().enumerate() {
            if !users.contains(member.as_str()) {
                errors.push(FieldError::new(
                    format!("spec.huntGroups[{i}].members[{j}]"),
                    format!("no user has extension {member}"),
                ));
            }
        }
        if let Some(overflow) = &group.overflow {
            check_target(
                format!("spec.huntGroups[{i}].overflow"),
                overflow,
                &mut errors,
            );
        }
    }

    let mut number_trunks = Vec::with_capacity(spec.numbers.len());
    for (i, number) in spec.numbers.iter().enumerate() {
        check_target(
            format!("spec.numbers[{i}].target"),
            &number.target,
            &mut errors,
        );
        match trunk_for(&inputs.trunks, &number.number) {
            Some(trunk) => number_trunks.push(trunk.to_string()),
            None => errors.push(FieldError::new(
                format!("spec.numbers[{i}].number"),
                format!(
                    "{} is in no Trunk's numberPrefixes in namespace {namespace}",
                    number.number
                ),
            )),
        }
    }

    if errors.is_empty() {
        Ok(Resolved {
            passwords,
            number_trunks,
        })
    } else {
        Err(errors)
    }
}

/// The Trunk whose longest prefix holds `number`.
fn trunk_for<'a>(trunks: &'a BTreeMap<String, TrunkSpec>, number: &str) -> Option<&'a str> {
    trunks
        .iter()
        .flat_map(|(name, spec)| spec.number_prefixes.iter().map(move |p| (name, p)))
        .filter(|(_, prefix)| number.starts_with(prefix.as_str()))
        .max_by_key(|(_, prefix)| prefix.len())
        .map(|(name, _)| name.as_str())
}

/// Looks a password up, with a message naming the Secret and key when it cannot be used.
pub fn password<'a>(inputs: &'a Inputs, secret: &str, key: &str) -> Result<&'a [u8], String> {
    let data = inputs
        .secrets
        .get(secret)
        .ok_or_else(|| format!("Secret {secret:?} not found"))?;
    let value = data
        .get(key)
        .ok_or_else(|| format!("Secret {secret:?} has no key {key:?}"))?;
    if value.len() < MIN_PASSWORD_LEN {
        return Err(format!(
            "the password in Secret {secret:?} key {key:?} is shorter than {MIN_PASSWORD_LEN} characters"
        ));
    }
    Ok(value)
}

/// A claim on a unique value: the oldest object holds it, ties broken by `namespace/name`.
struct Claim {
    key: String,
    created: Option<Timestamp>,
}

impl Claim {
    fn yields_to(&self, rival: &Rival) -> bool {
        let mine = (self.created.unwrap_or(Timestamp::MAX), &self.key);
        let theirs = (rival.created.unwrap_or(Timestamp::MAX), &rival.key);
        theirs < mine
    }
}

/// `namespace/name` of a tenant.
pub fn key_of(tenant: &Tenant) -> String {
    format!(
        "{}/{}",
        tenant.metadata.namespace.as_deref().unwrap_or_default(),
        tenant.metadata.name.as_deref().unwrap_or_default()
    )
}

fn created_of(tenant: &Tenant) -> Option<Timestamp> {
    tenant.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// A tenant as a rival of others.
pub fn rival_of(tenant: &Tenant) -> Rival {
    Rival {
        key: key_of(tenant),
        created: created_of(tenant),
        domain: tenant.spec.domain.clone(),
        numbers: tenant
            .spec
            .numbers
            .iter()
            .map(|n| n.number.clone())
            .collect(),
    }
}
