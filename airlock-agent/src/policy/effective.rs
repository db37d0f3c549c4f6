//! What a role is held to, as the API reports it: every kind of rule the
//! compiled policy enforces for it, with hostnames' current addresses.

use airlock_api::v1 as pb;
use airlock_common::abi::{ROLE_ALLOW_FILELESS, ROLE_ALLOW_LOADER, ROLE_ALLOW_RAW_SOCKETS, ROLE_DENY_SESSION_WRITTEN};
use airlock_policy::CompiledPolicy;
use anyhow::{bail, Result};

use super::hostnames::HostStatus;

/// The effective policy of `role` in `compiled` (generation `generation`).
pub fn effective_policy(compiled: &CompiledPolicy, generation: u32, role: &str, hosts: &[HostStatus]) -> Result<pb::EffectivePolicy> {
    let Some(r) = compiled.role(role) else {
        bail!("unknown role {role:?}; roles in force: {}", compiled.roles.keys().cloned().collect::<Vec<_>>().join(", "));
    };
    let flags = compiled.role_sets.iter().find(|(name, _)| name == role).map_or(0, |(_, set)| set.flags);
    let ports = |p: &[u16]| p.iter().map(|&p| u32::from(p)).collect::<Vec<_>>();
    let addresses = |host: &str| hosts.iter().find(|h| h.host == host).map(|h| h.addresses.clone()).unwrap_or_default();
    let egress = |rules: &[airlock_policy::EgressRuleCompiled]| {
        rules
            .iter()
            .map(|e| pb::EgressRule { policy: e.policy_id.clone(), rule: e.text.clone(), destination: e.net.to_string(), ports: ports(&e.ports) })
            .collect()
    };
    Ok(pb::EffectivePolicy {
        role: role.to_string(),
        policy_version: compiled.version.clone(),
        generation,
        policies: r.policies.clone(),
        blocked_commands: exec_rules(&r.commands),
        approval_commands: exec_rules(&r.approvals),
        denied_egress: egress(&r.egress),
        allowed_egress: egress(&r.allow),
        hostname_rules: r
            .hosts
            .iter()
            .map(|h| pb::HostnameRule {
                policy: h.policy_id.clone(),
                rule: h.text.clone(),
                host: h.host.clone(),
                ports: ports(&h.ports),
                allow: h.allow,
                addresses: addresses(&h.host),
            })
            .collect(),
        egress_default: if r.egress_default_deny { "deny" } else { "allow" }.to_string(),
        unix_socket_rules: r
            .unix
            .iter()
            .map(|u| pb::UnixSocketRule {
                policy: u.policy_id.clone(),
                rule: u.text.clone(),
                path: String::from_utf8_lossy(&u.path).into_owned(),
                prefix: u.prefix,
            })
            .collect(),
        protected_files: r
            .files
            .iter()
            .map(|f| pb::ProtectedFileRule { policy: f.policy_id.clone(), rule: f.pattern.text.clone(), path: f.pattern.text.clone(), allowed_programs: f.allow.clone() })
            .collect(),
        fileless_exec_allowed: flags & ROLE_ALLOW_FILELESS != 0,
        direct_loader_allowed: flags & ROLE_ALLOW_LOADER != 0,
        session_written_exec_denied: flags & ROLE_DENY_SESSION_WRITTEN != 0,
        raw_sockets: if flags & ROLE_ALLOW_RAW_SOCKETS != 0 { "allow" } else { "deny" }.to_string(),
    })
}

fn exec_rules(rules: &[airlock_policy::CommandRule]) -> Vec<pb::ExecRule> {
    rules
        .iter()
        .map(|c| pb::ExecRule { policy: c.policy_id.clone(), rule: c.text.clone(), command: std::iter::once(c.program.clone()).chain(c.words.iter().cloned()).collect() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_policy::{compile, load_sources, IdAllocator, PolicySource};

    #[test]
    fn every_kind_of_rule_is_reported() {
        let policy = r#"{ "id": "p", "name": "P",
            "blocked_commands": ["terraform apply"], "approval_commands": ["kubectl delete"],
            "egress": { "deny": ["10.0.0.0/8", "meta.test"], "allow": [{ "cidr": "192.0.2.0/24", "ports": [443] }], "unix_deny": ["/run/docker.sock", "/tmp/tmux-*"] },
            "protected_files": [{ "path": "~/.aws/credentials", "allow": ["aws"] }] }"#;
        let role = r#"{ "id": "r", "name": "R", "policies": ["p"], "egress_default": "deny" }"#;
        let loaded = load_sources(vec![PolicySource::policy("policies/p.json", policy), PolicySource::role("roles/r.json", role)]).expect("loads");
        let compiled = compile(&loaded, &mut IdAllocator::new());
        let hosts = vec![HostStatus { host: "meta.test".into(), addresses: vec!["192.0.2.9".into()], ttl: 30, resolved_at: String::new(), error: None }];
        let e = effective_policy(&compiled, 3, "r", &hosts).expect("role r");
        assert_eq!(e.generation, 3);
        assert_eq!(e.blocked_commands[0].command, vec!["terraform", "apply"]);
        assert_eq!(e.approval_commands[0].command, vec!["kubectl", "delete"]);
        assert_eq!(e.denied_egress[0].destination, "10.0.0.0/8");
        assert_eq!((e.allowed_egress[0].destination.as_str(), e.allowed_egress[0].ports.as_slice()), ("192.0.2.0/24", &[443][..]));
        assert_eq!(e.hostname_rules[0].addresses, vec!["192.0.2.9"]);
        assert!(!e.hostname_rules[0].allow);
        assert_eq!(e.egress_default, "deny");
        assert_eq!(e.unix_socket_rules.len(), 2);
        assert!(e.unix_socket_rules.iter().any(|u| u.path == "/tmp/tmux-" && u.prefix));
        assert_eq!(e.protected_files.iter().find(|f| f.path == "~/.aws/credentials").map(|f| f.allowed_programs.clone()), Some(vec!["aws".to_string()]));
        assert!(!e.fileless_exec_allowed && !e.direct_loader_allowed, "denied unless every policy allows them");
        assert_eq!(e.raw_sockets, "deny", "denied unless every policy allows them");
        assert!(effective_policy(&compiled, 3, "nobody", &hosts).is_err());
    }
}
