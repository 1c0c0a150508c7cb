//! MediaPool → StatefulSet (stable identity per relay node), headless Service, PodDisruptionBudget.

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Container, PodAffinityTerm, PodAntiAffinity, PodSpec, PodTemplateSpec, Service,
    ServicePort, ServiceSpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use super::pod;
use crate::config::OperatorConfig;
use crate::crd::{MediaNetworkMode, MediaPool};
use crate::labels::{Component, PoolLabels};

/// Every object a MediaPool wants.
pub struct MediaObjects {
    pub stateful_set: StatefulSet,
    pub service: Service,
    pub disruption_budget: PodDisruptionBudget,
}

/// Name of the StatefulSet and headless Service of a media pool.
pub fn workload_name(pool: &str) -> String {
    format!("{pool}-media")
}

/// Labels of a media pool's objects.
pub fn labels(pool: &MediaPool) -> PoolLabels {
    PoolLabels::new(Component::MediaNode, &pool.name_any())
}

/// Builds the objects of `pool`, its StatefulSet at `replicas` (which lags `spec.replicas` while
/// pods drain before a scale-down, see [`super::scale_down`]). Pure.
pub fn build(pool: &MediaPool, config: &OperatorConfig, replicas: i32) -> MediaObjects {
    let spec = &pool.spec;
    let labels = labels(pool);
    let name = workload_name(&pool.name_any());
    let meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: pool.namespace(),
        labels: Some(labels.all()),
        owner_references: pool.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    };
    let selector = LabelSelector {
        match_labels: Some(labels.selector()),
        ..Default::default()
    };
    let host_network = spec.network.mode == MediaNetworkMode::HostNetwork;

    let mut args = vec![
        Component::MediaNode.as_str().to_string(),
        format!("--pool={}", pool.name_any()),
        format!("--rtp-ports={}-{}", spec.rtp_ports.min, spec.rtp_ports.max),
        format!("--max-sessions={}", spec.sessions_per_node),
        format!("--drain-timeout={}s", spec.drain_timeout_seconds),
    ];
    if let Some(address) = &spec.network.advertised_address {
        args.push(format!("--advertise={address}"));
    }
    let placement = spec.placement.clone().unwrap_or_default();
    let container = Container {
        name: Component::MediaNode.as_str().into(),
        image: Some(spec.image.clone().unwrap_or_else(|| config.image.clone())),
        args: Some(args),
        env: Some(pod::env(config)),
        ports: Some(vec![pod::grpc_port(), pod::http_port()]),
        readiness_probe: Some(pod::probe("/readyz")),
        liveness_probe: Some(pod::probe("/healthz")),
        lifecycle: Some(pod::drain_hook(Component::MediaNode.as_str())),
        resources: spec.resources.clone(),
        security_context: Some(pod::container_security()),
        ..Default::default()
    };
    let pod_spec = PodSpec {
        containers: vec![container],
        host_network: host_network.then_some(true),
        dns_policy: host_network.then(|| "ClusterFirstWithHostNet".into()),
        // With host networking two relays on one node would fight over the RTP ports.
        affinity: host_network.then(|| one_per_node(&labels)),
        termination_grace_period_seconds: Some(pod::grace_period(spec.drain_timeout_seconds)),
        security_context: Some(pod::pod_security()),
        automount_service_account_token: Some(false),
        node_selector: (!placement.node_selector.is_empty()).then_some(placement.node_selector),
        tolerations: (!placement.tolerations.is_empty()).then_some(placement.tolerations),
        ..Default::default()
    };

    let stateful_set = StatefulSet {
        metadata: meta.clone(),
        spec: StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(name.clone()),
            selector: selector.clone(),
            // Relays are independent: start and stop them in parallel.
            pod_management_policy: Some("Parallel".into()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.all()),
                    ..Default::default()
                }),
                spec: Some(pod_spec),
            },
            ..Default::default()
        },
        status: None,
    };
    let service = Service {
        metadata: meta.clone(),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(labels.selector()),
            ports: Some(vec![ServicePort {
                name: Some("grpc".into()),
                port: OperatorConfig::GRPC_PORT,
                target_port: Some(IntOrString::String("grpc".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    let disruption_budget = PodDisruptionBudget {
        metadata: meta,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(selector),
            ..Default::default()
        }),
        status: None,
    };
    MediaObjects {
        stateful_set,
        service,
        disruption_budget,
    }
}

fn one_per_node(labels: &PoolLabels) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_labels: Some(labels.selector()),
                    ..Default::default()
                }),
                topology_key: "kubernetes.io/hostname".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
