//! Pod template pieces shared by both pools: environment, probes, security, drain hook.

use k8s_openapi::api::core::v1::{
    Capabilities, ContainerPort, EnvVar, EnvVarSource, ExecAction, HTTPGetAction, Lifecycle,
    LifecycleHandler, ObjectFieldSelector, PodSecurityContext, Probe, SeccompProfile,
    SecurityContext,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::config::OperatorConfig;

/// Non-root user every Centrex container runs as.
pub const RUN_AS_USER: i64 = 65532;

/// Environment common to every pod: its identity, its address and the store endpoints.
pub fn env(config: &OperatorConfig) -> Vec<EnvVar> {
    let from_field = |name: &str, path: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    vec![
        from_field("POD_NAME", "metadata.name"),
        from_field("POD_NAMESPACE", "metadata.namespace"),
        from_field("POD_IP", "status.podIP"),
        from_field("HOST_IP", "status.hostIP"),
        EnvVar {
            name: "CENTREX_ETCD_ENDPOINTS".into(),
            value: Some(config.etcd_endpoints.join(",")),
            ..Default::default()
        },
    ]
}

/// The HTTP port of `/metrics` and the probes.
pub fn http_port() -> ContainerPort {
    ContainerPort {
        name: Some("http".into()),
        container_port: OperatorConfig::HTTP_PORT,
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// The gRPC port (media control, signalling hand-over).
pub fn grpc_port() -> ContainerPort {
    ContainerPort {
        name: Some("grpc".into()),
        container_port: OperatorConfig::GRPC_PORT,
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// An HTTP probe on `path`.
pub fn probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(5),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

/// preStop hook: the pod stops taking new work and waits for its calls (up to the drain
/// timeout) before Kubernetes sends SIGTERM. Exec, because the image has no shell.
pub fn drain_hook(component: &str) -> Lifecycle {
    Lifecycle {
        pre_stop: Some(LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec!["centrex".into(), component.into(), "drain".into()]),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Grace period of a pool's pods: the drain timeout plus time to exit.
pub fn grace_period(drain_timeout_seconds: i32) -> i64 {
    i64::from(drain_timeout_seconds.max(0)) + OperatorConfig::EXIT_MARGIN_SECONDS
}

/// Restricted pod security (Pod Security Standards "restricted").
pub fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_USER),
        run_as_group: Some(RUN_AS_USER),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Restricted container security.
pub fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
