//! What makes every pod the operator builds pass the Pod Security Standards' "restricted"
//! profile (checked by `crate::pod_security` and, in the envtest suite, by the API server's
//! PodSecurity admission): a fixed non-root user, the runtime's default seccomp profile, no
//! capabilities, no privilege escalation, a read-only root filesystem with `emptyDir`s where
//! a process must write, and no ServiceAccount token (no pod of an application calls the
//! Kubernetes API).

use k8s_openapi::api::core::v1::{
    Capabilities, EmptyDirVolumeSource, PodSecurityContext, SeccompProfile, SecurityContext, Volume, VolumeMount,
};

/// The images' user (distroless `nonroot`, see the Dockerfiles); set explicitly so that an
/// image built as root still runs unprivileged instead of being refused by `runAsNonRoot`.
pub const USER_ID: i64 = 65532;

pub fn restricted_pod_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(USER_ID),
        run_as_group: Some(USER_ID),
        // Mounted Secrets and volumes are group-readable by it.
        fs_group: Some(USER_ID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

pub fn restricted_container_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// `/tmp` as an `emptyDir`: the root filesystem is read-only, and runtimes (the JVM, Python's
/// tempfile, Node) write temporary files there.
pub const TMP_VOLUME: &str = "tmp";

pub fn tmp_volume() -> Volume {
    Volume {
        name: TMP_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

pub fn tmp_mount() -> VolumeMount {
    VolumeMount {
        name: TMP_VOLUME.into(),
        mount_path: "/tmp".into(),
        ..VolumeMount::default()
    }
}
