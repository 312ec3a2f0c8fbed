//! CEL conditions on attestations (cel-rust), compiled when the config loads.
//!
//! Variables an expression sees:
//! - `predicate`: the in-toto statement's `predicate` (JSON → CEL maps, lists, numbers, strings);
//! - `statement`: the whole statement (`_type`, `subject`, `predicateType`, `predicate`);
//! - `image`: `{registry, repository, tag, digest}` (`repository` without the registry; `tag`
//!   is `""` for images given by digest only);
//! - `now`: the current time, a CEL timestamp.
//!
//! The standard library's `timestamp()`, `duration()`, `has()`, `all()`, `exists()`,
//! `filter()`, `map()`, `size()`, `matches()` are available.

use std::fmt;
use std::sync::Arc;

use serde_json::Value as Json;

/// A compiled expression with its source (reasons quote the source).
#[derive(Clone)]
pub struct Condition {
    source: String,
    program: Arc<cel::Program>,
}

/// Why an expression did not compile.
#[derive(Debug, Clone, thiserror::Error)]
#[error("CEL does not compile: {0}")]
pub struct CompileError(String);

/// Why evaluation failed (a missing field, a type error, a non-boolean result).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(String);

/// What the expression can see about the image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageFacts {
    pub registry: String,
    pub repository: String,
    pub tag: String,
    pub digest: String,
}

impl Condition {
    pub fn compile(source: &str) -> Result<Self, CompileError> {
        let program = cel::Program::compile(source).map_err(|e| CompileError(e.to_string()))?;
        Ok(Self {
            source: source.to_owned(),
            program: Arc::new(program),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates against one statement; `Ok(false)` is a failed condition, `Err` a runtime error.
    pub fn evaluate(
        &self,
        statement: &Json,
        image: &ImageFacts,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, EvalError> {
        let mut ctx = cel::Context::default();
        let predicate = statement.get("predicate").cloned().unwrap_or(Json::Null);
        let add =
            |ctx: &mut cel::Context<'_, '_>, name: &str, v: &dyn erased::Ser| v.add_to(ctx, name);
        add(&mut ctx, "predicate", &predicate)?;
        add(&mut ctx, "statement", statement)?;
        add(&mut ctx, "image", image)?;
        ctx.add_variable_from_value("now", cel::Value::Timestamp(now.fixed_offset()));
        match self.program.execute(&ctx) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(EvalError(format!(
                "the expression gave {other:?}, not a boolean"
            ))),
            Err(e) => Err(EvalError(e.to_string())),
        }
    }
}

/// A small object-safe shim over `serde::Serialize` for adding variables.
mod erased {
    use super::EvalError;

    pub trait Ser {
        fn add_to(&self, ctx: &mut cel::Context<'_, '_>, name: &str) -> Result<(), EvalError>;
    }

    impl<T: serde::Serialize> Ser for T {
        fn add_to(&self, ctx: &mut cel::Context<'_, '_>, name: &str) -> Result<(), EvalError> {
            let value = cel::to_value(self)
                .map_err(|e| EvalError(format!("cannot expose {name} to CEL: {e}")))?;
            ctx.add_variable_from_value(name, value);
            Ok(())
        }
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Condition").field(&self.source).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn facts() -> ImageFacts {
        ImageFacts {
            registry: "r.io".into(),
            repository: "team/app".into(),
            tag: "v1".into(),
            digest: "sha256:aa".into(),
        }
    }

    fn eval(expr: &str, statement: Json) -> Result<bool, EvalError> {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        Condition::compile(expr)
            .unwrap()
            .evaluate(&statement, &facts(), now)
    }

    #[test]
    fn slsa_v1_builder_id() {
        let st = json!({"predicate": {"runDetails": {"builder": {"id": "https://ci/b@v1"}}}});
        assert_eq!(
            eval(
                r#"predicate.runDetails.builder.id == "https://ci/b@v1""#,
                st.clone()
            ),
            Ok(true)
        );
        assert_eq!(
            eval(r#"predicate.runDetails.builder.id == "x""#, st),
            Ok(false)
        );
    }

    #[test]
    fn missing_field_is_a_runtime_error_not_false() {
        let st = json!({"predicate": {}});
        assert!(eval(r#"predicate.runDetails.builder.id == "x""#, st.clone()).is_err());
        assert_eq!(eval(r#"has(predicate.runDetails)"#, st), Ok(false));
    }

    #[test]
    fn max_cvss_and_scan_freshness() {
        let st = json!({"predicate": {
        "metadata": {"scanFinishedOn": "2026-11-20T00:00:00Z"},
        "scanner": {"result": {"Results": [
            {"Vulnerabilities": [{"CVSS": {"nvd": {"V3Score": 7.5}}}, {"CVSS": {"nvd": {"V3Score": 4.8}}}]},
            {"Target": "no vulns"}
        ]}}}});
        let max7 = "predicate.scanner.result.Results.all(r, !has(r.Vulnerabilities) || r.Vulnerabilities.all(v, v.CVSS.nvd.V3Score <= 7.0))";
        assert_eq!(eval(max7, st.clone()), Ok(false));
        let max8 = max7.replace("7.0", "8.0");
        assert_eq!(eval(&max8, st.clone()), Ok(true));
        let fresh = r#"now - timestamp(predicate.metadata.scanFinishedOn) < duration("168h")"#;
        assert_eq!(eval(fresh, st.clone()), Ok(true));
        let stale = r#"now - timestamp(predicate.metadata.scanFinishedOn) < duration("24h")"#;
        assert_eq!(eval(stale, st), Ok(false));
    }

    #[test]
    fn image_and_statement_are_visible() {
        let st = json!({"predicateType": "https://cyclonedx.org/bom", "predicate": {"components": [1, 2]}});
        assert_eq!(
            eval(
                r#"image.repository.startsWith("team/") && image.tag == "v1""#,
                st.clone()
            ),
            Ok(true)
        );
        assert_eq!(
            eval(
                r#"statement.predicateType == "https://cyclonedx.org/bom" && size(predicate.components) > 1"#,
                st
            ),
            Ok(true)
        );
    }

    #[test]
    fn non_boolean_results_and_bad_syntax_are_errors() {
        assert!(eval("1 + 1", json!({})).is_err());
        assert!(Condition::compile("predicate.(").is_err());
    }
}
