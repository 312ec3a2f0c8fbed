//! Every CEL example in docs/policy-cookbook.md compiles, and every example marked
//! `<!-- test: predicate=FILE expect=BOOL -->` gives that answer on that predicate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use portcullis::policy::condition::ImageFacts;
use portcullis::policy::Condition;

fn conditions(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let rest = l.trim().strip_prefix("condition: '")?;
            Some((i, rest.strip_suffix('\'')?.to_owned()))
        })
        .collect()
}

#[test]
fn every_cookbook_condition_compiles_and_gives_its_documented_answer() {
    let text = std::fs::read_to_string(common::root().join("docs/policy-cookbook.md")).unwrap();
    let all = conditions(&text);
    assert!(all.len() >= 12, "found only {} conditions", all.len());
    for (line, c) in &all {
        Condition::compile(c).unwrap_or_else(|e| panic!("line {}: {e}: {c}", line + 1));
    }
    let lines: Vec<&str> = text.lines().collect();
    let facts = ImageFacts {
        registry: "registry.example.com".into(),
        repository: "prod/app".into(),
        tag: "1.0".into(),
        digest: "sha256:0000000000000000000000000000000000000000000000000000000000000000".into(),
    };
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let mut tested = 0;
    for (i, l) in lines.iter().enumerate() {
        let Some(spec) = l.trim().strip_prefix("<!-- test:") else {
            continue;
        };
        let spec = spec.trim_end_matches("-->").trim();
        let mut predicate = None;
        let mut expect = None;
        for kv in spec.split_whitespace() {
            match kv.split_once('=') {
                Some(("predicate", p)) => predicate = Some(p.to_owned()),
                Some(("expect", e)) => expect = Some(e == "true"),
                _ => panic!("line {}: bad test marker {spec}", i + 1),
            }
        }
        let (line, cond) = all
            .iter()
            .find(|(at, _)| *at > i)
            .unwrap_or_else(|| panic!("line {}: no condition after the marker", i + 1));
        let pred: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(common::root().join(predicate.unwrap())).unwrap(),
        )
        .unwrap();
        let statement = serde_json::json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "registry.example.com/prod/app", "digest": {"sha256": "00"}}],
            "predicateType": "x",
            "predicate": pred,
        });
        let got = Condition::compile(cond)
            .unwrap()
            .evaluate(&statement, &facts, now);
        assert_eq!(got, Ok(expect.unwrap()), "line {}: {cond}", line + 1);
        tested += 1;
    }
    assert!(tested >= 12, "only {tested} examples tested");
}
