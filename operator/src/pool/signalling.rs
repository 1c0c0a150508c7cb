//! SignallingPool → Deployment, SIP Service, PodDisruptionBudget.

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PodSpec, PodTemplateSpec, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use super::pod;
use crate::config::OperatorConfig;
use crate::crd::{ServiceType, SignallingPool, SipService};
use crate::labels::{Component, PoolLabels};

/// Every object a SignallingPool wants.
pub struct SignallingObjects {
    pub deployment: Deployment,
    pub service: Service,
    pub disruption_budget: PodDisruptionBudget,
}

/// Name of the Deployment of a signalling pool.
pub fn workload_name(pool: &str) -> String {
    format!("{pool}-signalling")
}

/// Name of the SIP Service phones and carriers reach.
pub fn service_name(pool: &str) -> String {
    format!("{pool}-sip")
}

/// Labels of a signalling pool's objects.
pub fn labels(pool: &SignallingPool) -> PoolLabels {
    PoolLabels::new(Component::Signalling, &pool.name_any())
}

/// Builds the objects of `pool`. Pure.
pub fn build(pool: &SignallingPool, config: &OperatorConfig) -> SignallingObjects {
    let spec = &pool.spec;
    let labels = labels(pool);
    let meta = |name: String| ObjectMeta {
        name: Some(name),
        namespace: pool.namespace(),
        labels: Some(labels.all()),
        owner_references: pool.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    };
    let selector = LabelSelector {
        match_labels: Some(labels.selector()),
        ..Default::default()
    };

    // (name, port, protocol) of every SIP listener.
    let mut sip = vec![
        ("sip-udp", spec.sip.udp_port, "UDP"),
        ("sip-tcp", spec.sip.tcp_port, "TCP"),
    ];
    if let Some(tls) = spec.sip.tls_port {
        sip.push(("sip-tls", tls, "TCP"));
    }
    let mut args = vec![
        Component::Signalling.as_str().to_string(),
        format!("--pool={}", pool.name_any()),
        format!("--udp-port={}", spec.sip.udp_port),
        format!("--tcp-port={}", spec.sip.tcp_port),
        format!("--drain-timeout={}s", spec.drain_timeout_seconds),
        format!(
            "--digest-algorithms={}",
            spec.digest_algorithms
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ),
    ];
    if let Some(tls) = spec.sip.tls_port {
        args.push(format!("--tls-port={tls}"));
    }
    if let Some(address) = service_address(&spec.service, spec.sip.udp_port) {
        args.push(format!("--service-address={address}"));
    }
    let mut ports: Vec<ContainerPort> = sip
        .iter()
        .map(|(name, port, protocol)| ContainerPort {
            name: Some((*name).into()),
            container_port: *port,
            protocol: Some((*protocol).into()),
            ..Default::default()
        })
        .collect();
    ports.extend([pod::grpc_port(), pod::http_port()]);
    let placement = spec.placement.clone().unwrap_or_default();
    let container = Container {
        name: Component::Signalling.as_str().into(),
        image: Some(spec.image.clone().unwrap_or_else(|| config.image.clone())),
        args: Some(args),
        env: Some(pod::env(config)),
        ports: Some(ports),
        readiness_probe: Some(pod::probe("/readyz")),
        liveness_probe: Some(pod::probe("/healthz")),
        lifecycle: Some(pod::drain_hook(Component::Signalling.as_str())),
        resources: spec.resources.clone(),
        security_context: Some(pod::container_security()),
        ..Default::default()
    };

    let deployment = Deployment {
        metadata: meta(workload_name(&pool.name_any())),
        spec: DeploymentSpec {
            replicas: Some(spec.replicas),
            selector: selector.clone(),
            // Never dip below the wanted capacity during a rollout.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.all()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    termination_grace_period_seconds: Some(pod::grace_period(
                        spec.drain_timeout_seconds,
                    )),
                    security_context: Some(pod::pod_security()),
                    automount_service_account_token: Some(false),
                    node_selector: (!placement.node_selector.is_empty())
                        .then_some(placement.node_selector),
                    tolerations: (!placement.tolerations.is_empty())
                        .then_some(placement.tolerations),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        status: None,
    };

    let exposed = spec.service.type_ != ServiceType::ClusterIP;
    let mut service_meta = meta(service_name(&pool.name_any()));
    if !spec.service.annotations.is_empty() {
        service_meta.annotations = Some(spec.service.annotations.clone());
    }
    let service = Service {
        metadata: service_meta,
        spec: Some(ServiceSpec {
            type_: Some(spec.service.type_.as_str().into()),
            selector: Some(labels.selector()),
            ports: Some(
                sip.iter()
                    .map(|(name, port, protocol)| ServicePort {
                        name: Some((*name).into()),
                        port: *port,
                        target_port: Some(IntOrString::String((*name).into())),
                        protocol: Some((*protocol).into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            // Keep the phone's real source address: SIP needs it for NAT handling and trunk checks.
            external_traffic_policy: exposed.then(|| "Local".into()),
            // A phone's UDP flow keeps reaching the same pod (its state is in the store anyway).
            session_affinity: Some("ClientIP".into()),
            ..Default::default()
        }),
        status: None,
    };
    let disruption_budget = PodDisruptionBudget {
        metadata: meta(workload_name(&pool.name_any())),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(selector),
            ..Default::default()
        }),
        status: None,
    };
    SignallingObjects {
        deployment,
        service,
        disruption_budget,
    }
}
/// The pool's shared SIP address (`ip:port`, IPv6 bracketed) when the Service advertises one.
fn service_address(service: &SipService, udp_port: i32) -> Option<std::net::SocketAddr> {
    let ip: std::net::IpAddr = service.advertised_address.as_deref()?.parse().ok()?;
    Some(std::net::SocketAddr::new(ip, u16::try_from(udp_port).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(address: Option<&str>) -> SipService {
        SipService {
            advertised_address: address.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn the_service_address_is_the_advertised_ip_with_the_udp_port() {
        let v4 = service_address(&service(Some("203.0.113.10")), 5060);
        assert_eq!(v4.unwrap().to_string(), "203.0.113.10:5060");
        let v6 = service_address(&service(Some("2001:db8::1")), 5080);
        assert_eq!(v6.unwrap().to_string(), "[2001:db8::1]:5080");
        assert_eq!(service_address(&service(None), 5060), None);
    }
}
