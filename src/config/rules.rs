//! Validation of `rules:` into compiled policy rules: globs, actions, authorities (keys
//! read and parsed), thresholds, attestations with CEL compiled now, multi-arch, mode.

use super::{file, Checker};
use crate::policy::{
    AttestationPolicy, Authority, Condition, ImageGlob, Mode, MultiArch, Rule, RuleAction,
    SignaturePolicy, TagPolicy, VerifyPolicy,
};
use crate::verify::TrustedKey;

pub(super) fn rule(c: &mut Checker<'_>, i: usize, r: &file::RuleFile) -> Option<Rule> {
    let at = |f: &str| format!("rules[{i}].{f}");
    let name = match &r.name {
        Some(n) if !n.trim().is_empty() => n.clone(),
        _ => {
            c.problem(
                at("name"),
                "every rule needs a name (it appears in reasons)",
            );
            format!("#{i}")
        }
    };
    if r.images.is_empty() {
        c.problem(at("images"), "at least one image glob is needed");
    }
    let mut images = Vec::new();
    for (j, g) in r.images.iter().enumerate() {
        match ImageGlob::parse(g) {
            Ok(g) => images.push(g),
            Err(e) => c.problem(at(&format!("images[{j}]")), e.to_string()),
        }
    }
    if let Some(ns) = &r.namespaces {
        if ns.is_empty() {
            c.problem(
                at("namespaces"),
                "an empty list matches nothing; omit it to match all",
            );
        }
    }
    let mut key_material = Vec::new();
    let verify = r.signatures.is_some() || !r.attestations.is_empty();
    let action = match (r.action.as_deref(), verify) {
        (Some("allow"), false) => RuleAction::Allow,
        (Some("deny"), false) => RuleAction::Deny,
        (Some("verify") | None, true) => {
            RuleAction::Verify(verify_policy(c, i, r, &mut key_material))
        }
        (Some("verify"), false) => {
            c.problem(
                at("signatures"),
                "action verify needs signatures or attestations",
            );
            RuleAction::Deny
        }
        (None, false) => {
            c.problem(
                at("action"),
                "set action (allow | deny), or signatures / attestations",
            );
            RuleAction::Deny
        }
        (Some(a @ ("allow" | "deny")), true) => {
            c.problem(
                at("action"),
                format!("action {a} cannot be combined with signatures or attestations"),
            );
            RuleAction::Deny
        }
        (Some(other), _) => {
            c.problem(
                at("action"),
                format!("{other:?} is not allow, deny or verify"),
            );
            RuleAction::Deny
        }
    };
    let mode = match r.mode.as_deref() {
        None | Some("enforce") => Mode::Enforce,
        Some("warn") => Mode::Warn,
        Some(o) => {
            c.problem(at("mode"), format!("{o:?} is not enforce or warn"));
            Mode::Enforce
        }
    };
    let rule = Rule {
        name,
        images,
        namespaces: r.namespaces.clone(),
        tags: TagPolicy {
            forbid_latest: r.tags.forbid_latest,
            require_digest: r.tags.require_digest,
        },
        action,
        mode,
        break_glass: r.break_glass,
        fingerprint: Rule::fingerprint_of(&format!("{r:?}"), &key_material),
    };
    Some(rule)
}

pub(super) fn verify_policy(
    c: &mut Checker<'_>,
    i: usize,
    r: &file::RuleFile,
    key_material: &mut Vec<u8>,
) -> VerifyPolicy {
    let at = |f: &str| format!("rules[{i}].{f}");
    let signatures = r.signatures.as_ref().map(|s| {
        let mut authorities = Vec::new();
        for (j, k) in s.keys.iter().enumerate() {
            let field = at(&format!("signatures.keys[{j}]"));
            if let Some(a) = key_authority(c, &field, None, k, key_material) {
                authorities.push(a);
            }
        }
        authorities.extend(authority_list(
            c,
            &at("signatures.authorities"),
            &s.authorities,
            key_material,
        ));
        if s.keys.is_empty() && s.authorities.is_empty() {
            c.problem(at("signatures"), "at least one key or authority is needed");
        }
        let threshold = s.threshold.unwrap_or(1);
        let given = s.keys.len() + s.authorities.len();
        if threshold == 0 || threshold > given.max(1) {
            c.problem(
                at("signatures.threshold"),
                format!("must be between 1 and the number of authorities ({given})"),
            );
        }
        SignaturePolicy {
            authorities,
            threshold,
        }
    });
    let mut attestations = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (j, a) in r.attestations.iter().enumerate() {
        let field = at(&format!("attestations[{j}]"));
        let name = a.name.clone().unwrap_or_else(|| {
            c.problem(
                format!("{field}.name"),
                "every attestation needs a name (it appears in reasons)",
            );
            format!("#{j}")
        });
        if !names.insert(name.clone()) {
            c.problem(
                format!("{field}.name"),
                format!("duplicate attestation name {name:?}"),
            );
        }
        let predicate_type = a.predicate_type.clone().unwrap_or_else(|| {
            c.problem(
                format!("{field}.predicateType"),
                "required (e.g. https://slsa.dev/provenance/v1)",
            );
            String::new()
        });
        if a.authorities.is_empty() {
            c.problem(
                format!("{field}.authorities"),
                "at least one authority is needed: attestations are verified with their own authorities",
            );
        }
        let authorities = authority_list(
            c,
            &format!("{field}.authorities"),
            &a.authorities,
            key_material,
        );
        let condition = a
            .condition
            .as_ref()
            .and_then(|src| match Condition::compile(src) {
                Ok(cond) => Some(cond),
                Err(e) => {
                    c.problem(format!("{field}.condition"), e.to_string());
                    None
                }
            });
        attestations.push(AttestationPolicy {
            name,
            predicate_type,
            authorities,
            condition,
        });
    }
    let multi_arch = match r.multi_arch.as_deref() {
        None | Some("index") => MultiArch::Index,
        Some("platforms") => MultiArch::Platforms,
        Some(o) => {
            c.problem(at("multiArch"), format!("{o:?} is not index or platforms"));
            MultiArch::Index
        }
    };
    if multi_arch == MultiArch::Platforms && signatures.is_none() {
        c.problem(
            at("multiArch"),
            "platforms checks each platform's signatures: it needs signatures",
        );
    }
    VerifyPolicy {
        signatures,
        attestations,
        multi_arch,
    }
}

fn authority_list(
    c: &mut Checker<'_>,
    field: &str,
    list: &[file::AuthorityFile],
    key_material: &mut Vec<u8>,
) -> Vec<Authority> {
    let mut out = Vec::new();
    for (j, a) in list.iter().enumerate() {
        let f = format!("{field}[{j}]");
        match &a.key {
            Some(k) => {
                if let Some(auth) =
                    key_authority(c, &format!("{f}.key"), a.name.as_deref(), k, key_material)
                {
                    out.push(auth);
                }
            }
            None => c.problem(
                f,
                "an authority needs a key (keyless authorities are not supported yet)",
            ),
        }
    }
    out
}

fn key_authority(
    c: &mut Checker<'_>,
    field: &str,
    name: Option<&str>,
    path: &str,
    key_material: &mut Vec<u8>,
) -> Option<Authority> {
    let pem = c.read(field, path)?;
    key_material.extend_from_slice(&pem);
    match TrustedKey::from_pem(path, &pem) {
        Ok(key) => Some(Authority {
            name: name.unwrap_or(path).to_owned(),
            key,
        }),
        Err(e) => {
            c.problem(field, e.to_string());
            None
        }
    }
}
