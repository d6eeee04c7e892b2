//! The Pod Security Standards' "restricted" profile (Kubernetes 1.30+, which includes every
//! "baseline" rule), checked against a pod spec: every rule of
//! https://kubernetes.io/docs/concepts/security/pod-security-standards/ that a pod spec can
//! break, one function each, so that a test can say which rule a built pod breaks. The API
//! server's PodSecurity admission checks the same at pod creation (the envtest suite lets it).

use k8s_openapi::api::core::v1::{Capabilities, PodSpec, SecurityContext};

/// Capabilities "baseline" allows to be added; "restricted" allows only `NET_BIND_SERVICE`.
const RESTRICTED_ADD: [&str; 1] = ["NET_BIND_SERVICE"];
/// Sysctls the "baseline" profile allows (the safe set).
const SAFE_SYSCTLS: [&str; 9] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
];
const ALLOWED_VOLUMES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Every way `pod` breaks the restricted profile, each naming the rule and the field.
/// Empty: the pod is admitted by a namespace labelled `pod-security.kubernetes.io/enforce=restricted`.
pub fn restricted_violations(pod: &PodSpec) -> Vec<String> {
    let mut out = Vec::new();
    let mut bad = |rule: &str, what: String| out.push(format!("{rule}: {what}"));
    let psc = pod.security_context.clone().unwrap_or_default();

    // Baseline: host namespaces, HostProcess, sysctls, volumes (hostPath is one of the
    // restricted profile's disallowed volume types too).
    for (field, on) in [
        ("hostNetwork", pod.host_network),
        ("hostPID", pod.host_pid),
        ("hostIPC", pod.host_ipc),
    ] {
        if on == Some(true) {
            bad("host namespaces", format!("spec.{field} is true"));
        }
    }
    if psc.windows_options.as_ref().and_then(|w| w.host_process) == Some(true) {
        bad(
            "HostProcess",
            "spec.securityContext.windowsOptions.hostProcess is true".into(),
        );
    }
    for s in psc.sysctls.iter().flatten() {
        if !SAFE_SYSCTLS.contains(&s.name.as_str()) {
            bad(
                "sysctls",
                format!("spec.securityContext.sysctls: {} is not in the safe set", s.name),
            );
        }
    }
    for v in pod.volumes.iter().flatten() {
        let value = serde_json::to_value(v).expect("volumes serialize");
        for key in value.as_object().into_iter().flatten().map(|(k, _)| k.as_str()) {
            if key != "name" && !ALLOWED_VOLUMES.contains(&key) {
                bad("volume types", format!("volume {} is of type {key}", v.name));
            }
        }
    }
    // Pod-level settings that the restricted profile accepts in place of every container's.
    let pod_non_root = psc.run_as_non_root == Some(true);
    let pod_seccomp = psc.seccomp_profile.as_ref().map(|p| p.type_.as_str());
    if psc.run_as_user == Some(0) {
        bad("running as non-root user", "spec.securityContext.runAsUser is 0".into());
    }
    if let Some(t) = pod_seccomp
        && !matches!(t, "RuntimeDefault" | "Localhost")
    {
        bad("seccomp", format!("spec.securityContext.seccompProfile.type is {t}"));
    }
    if let Some(t) = psc.app_armor_profile.as_ref().map(|p| p.type_.as_str())
        && !matches!(t, "RuntimeDefault" | "Localhost")
    {
        bad("AppArmor", format!("spec.securityContext.appArmorProfile.type is {t}"));
    }
    if let Some(se) = &psc.se_linux_options {
        selinux(&mut bad, "spec.securityContext.seLinuxOptions", se);
    }

    let containers = pod
        .containers
        .iter()
        .map(|c| {
            (
                "containers",
                c.name.as_str(),
                c.security_context.clone(),
                c.ports.clone(),
            )
        })
        .chain(pod.init_containers.iter().flatten().map(|c| {
            (
                "initContainers",
                c.name.as_str(),
                c.security_context.clone(),
                c.ports.clone(),
            )
        }))
        .chain(pod.ephemeral_containers.iter().flatten().map(|c| {
            (
                "ephemeralContainers",
                c.name.as_str(),
                c.security_context.clone(),
                c.ports.clone(),
            )
        }));
    for (list, name, sc, ports) in containers {
        let at = format!("spec.{list}[{name}]");
        let sc: SecurityContext = sc.unwrap_or_default();
        if sc.privileged == Some(true) {
            bad(
                "privileged containers",
                format!("{at}.securityContext.privileged is true"),
            );
        }
        if sc.windows_options.as_ref().and_then(|w| w.host_process) == Some(true) {
            bad(
                "HostProcess",
                format!("{at}.securityContext.windowsOptions.hostProcess is true"),
            );
        }
        for p in ports.iter().flatten() {
            if p.host_port.is_some_and(|h| h != 0) {
                bad(
                    "host ports",
                    format!("{at}.ports[{}].hostPort is set", p.container_port),
                );
            }
        }
        if sc.proc_mount.as_deref().is_some_and(|m| m != "Default") {
            bad(
                "/proc mount type",
                format!("{at}.securityContext.procMount is not Default"),
            );
        }
        if let Some(se) = &sc.se_linux_options {
            selinux(&mut bad, &format!("{at}.securityContext.seLinuxOptions"), se);
        }
        if let Some(t) = sc.app_armor_profile.as_ref().map(|p| p.type_.as_str())
            && !matches!(t, "RuntimeDefault" | "Localhost")
        {
            bad("AppArmor", format!("{at}.securityContext.appArmorProfile.type is {t}"));
        }
        // Restricted.
        if sc.allow_privilege_escalation != Some(false) {
            bad(
                "privilege escalation",
                format!("{at}.securityContext.allowPrivilegeEscalation must be false"),
            );
        }
        match sc.run_as_non_root {
            Some(false) => bad(
                "running as non-root",
                format!("{at}.securityContext.runAsNonRoot is false"),
            ),
            None if !pod_non_root => bad(
                "running as non-root",
                format!("neither spec.securityContext.runAsNonRoot nor {at}.securityContext.runAsNonRoot is true"),
            ),
            _ => {}
        }
        if sc.run_as_user == Some(0) {
            bad(
                "running as non-root user",
                format!("{at}.securityContext.runAsUser is 0"),
            );
        }
        match sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()) {
            Some("RuntimeDefault" | "Localhost") => {}
            Some(t) => bad("seccomp", format!("{at}.securityContext.seccompProfile.type is {t}")),
            None if pod_seccomp.is_none() => bad(
                "seccomp",
                format!("neither spec.securityContext.seccompProfile nor {at}.securityContext.seccompProfile is set"),
            ),
            None => {}
        }
        capabilities(&mut bad, &at, sc.capabilities.as_ref());
    }
    out
}

fn selinux(bad: &mut impl FnMut(&str, String), at: &str, se: &k8s_openapi::api::core::v1::SELinuxOptions) {
    if let Some(t) = &se.type_
        && !matches!(
            t.as_str(),
            "container_t" | "container_init_t" | "container_kvm_t" | "container_engine_t"
        )
    {
        bad("SELinux", format!("{at}.type is {t}"));
    }
    if se.user.is_some() || se.role.is_some() {
        bad("SELinux", format!("{at}: user and role must not be set"));
    }
}

fn capabilities(bad: &mut impl FnMut(&str, String), at: &str, caps: Option<&Capabilities>) {
    let drop_all = caps
        .and_then(|c| c.drop.as_ref())
        .is_some_and(|d| d.iter().any(|c| c == "ALL"));
    if !drop_all {
        bad(
            "capabilities",
            format!("{at}.securityContext.capabilities.drop must include ALL"),
        );
    }
    for add in caps.and_then(|c| c.add.as_ref()).into_iter().flatten() {
        if !RESTRICTED_ADD.contains(&add.as_str()) {
            bad(
                "capabilities",
                format!("{at}.securityContext.capabilities.add has {add}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSecurityContext, SeccompProfile, Volume};

    fn good() -> PodSpec {
        PodSpec {
            containers: vec![Container {
                name: "c".into(),
                security_context: Some(crate::builders::restricted_container_context()),
                ..Container::default()
            }],
            security_context: Some(crate::builders::restricted_pod_context()),
            ..PodSpec::default()
        }
    }

    /// The checker itself: each rule, broken once, is reported; the good pod passes.
    #[test]
    fn every_rule_is_checked() {
        assert_eq!(restricted_violations(&good()), Vec::<String>::new());
        type Break = Box<dyn Fn(&mut PodSpec)>;
        let cases: Vec<(&str, Break)> = vec![
            ("host namespaces", Box::new(|p| p.host_network = Some(true))),
            ("host namespaces", Box::new(|p| p.host_pid = Some(true))),
            (
                "volume types",
                Box::new(|p| {
                    p.volumes = Some(vec![
                        serde_json::from_value::<Volume>(serde_json::json!({"name": "h", "hostPath": {"path": "/"}}))
                            .unwrap(),
                    ])
                }),
            ),
            (
                "privileged containers",
                Box::new(|p| p.containers[0].security_context.as_mut().unwrap().privileged = Some(true)),
            ),
            (
                "privilege escalation",
                Box::new(|p| {
                    p.containers[0]
                        .security_context
                        .as_mut()
                        .unwrap()
                        .allow_privilege_escalation = None
                }),
            ),
            (
                "running as non-root",
                Box::new(|p| {
                    p.security_context.as_mut().unwrap().run_as_non_root = None;
                    p.containers[0].security_context.as_mut().unwrap().run_as_non_root = None;
                }),
            ),
            (
                "running as non-root",
                Box::new(|p| p.containers[0].security_context.as_mut().unwrap().run_as_non_root = Some(false)),
            ),
            (
                "running as non-root user",
                Box::new(|p| p.security_context.as_mut().unwrap().run_as_user = Some(0)),
            ),
            (
                "seccomp",
                Box::new(|p| p.security_context.as_mut().unwrap().seccomp_profile = None),
            ),
            (
                "seccomp",
                Box::new(|p| {
                    p.security_context.as_mut().unwrap().seccomp_profile = Some(SeccompProfile {
                        type_: "Unconfined".into(),
                        ..SeccompProfile::default()
                    })
                }),
            ),
            (
                "capabilities",
                Box::new(|p| p.containers[0].security_context.as_mut().unwrap().capabilities = None),
            ),
            (
                "capabilities",
                Box::new(|p| {
                    let caps = p.containers[0]
                        .security_context
                        .as_mut()
                        .unwrap()
                        .capabilities
                        .as_mut()
                        .unwrap();
                    caps.add = Some(vec!["NET_ADMIN".into()]);
                }),
            ),
            (
                "host ports",
                Box::new(|p| {
                    p.containers[0].ports = Some(vec![k8s_openapi::api::core::v1::ContainerPort {
                        container_port: 80,
                        host_port: Some(80),
                        ..Default::default()
                    }])
                }),
            ),
            (
                "sysctls",
                Box::new(|p| {
                    p.security_context.as_mut().unwrap().sysctls = Some(vec![k8s_openapi::api::core::v1::Sysctl {
                        name: "kernel.msgmax".into(),
                        value: "1".into(),
                    }])
                }),
            ),
            (
                "/proc mount type",
                Box::new(|p| p.containers[0].security_context.as_mut().unwrap().proc_mount = Some("Unmasked".into())),
            ),
            (
                "SELinux",
                Box::new(|p| {
                    p.security_context.as_mut().unwrap().se_linux_options =
                        Some(k8s_openapi::api::core::v1::SELinuxOptions {
                            user: Some("root".into()),
                            ..Default::default()
                        })
                }),
            ),
            (
                "running as non-root",
                Box::new(|p| {
                    p.init_containers = Some(vec![Container {
                        name: "init".into(),
                        security_context: Some(SecurityContext {
                            run_as_non_root: Some(false),
                            ..crate::builders::restricted_container_context()
                        }),
                        ..Container::default()
                    }])
                }),
            ),
        ];
        for (rule, breaks) in cases {
            let mut pod = good();
            breaks(&mut pod);
            let found = restricted_violations(&pod);
            assert!(
                found.iter().any(|v| v.starts_with(&format!("{rule}:"))),
                "breaking {rule} was not reported: {found:?}"
            );
        }
        // Pod-level non-root and seccomp stand for every container.
        let pod = PodSpec {
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            ..good()
        };
        assert!(restricted_violations(&pod).is_empty());
    }
}
