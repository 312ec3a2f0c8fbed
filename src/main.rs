//! Binary entry point: parse the command line, set up logging, dispatch, map to an exit code.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use portcullis::cli::{exit, Cli, Command, Output};
use portcullis::engine::Engine;
use portcullis::{config, telemetry};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::ALLOWED
            });
        }
    };
    let level = if matches!(cli.command, Command::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    telemetry::init(cli.log_format, level);
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::USAGE)
        }
    }
}

fn run(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Serve { config: path } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(portcullis::server::run(path))?;
            Ok(exit::ALLOWED)
        }
        Command::DevCerts { out, sans } => {
            for p in portcullis::pki::generate(&out, &sans)? {
                println!("wrote {}", p.display());
            }
            Ok(exit::ALLOWED)
        }
        Command::CheckConfig { config: path } => {
            let c = config::load(&path)?;
            println!(
                "{}: OK ({} rule(s), {} registry setting(s))",
                path.display(),
                c.policy.rules.len(),
                c.registries.len()
            );
            Ok(exit::ALLOWED)
        }
        Command::Verify {
            config: path,
            output,
            namespace,
            images,
        } => {
            let c = config::load(&path)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(verify(c, output, namespace, images))
        }
    }
}

async fn verify(
    c: config::Config,
    output: Output,
    namespace: Option<String>,
    images: Vec<String>,
) -> anyhow::Result<u8> {
    let engine = Engine::new(&c).context("setting up registry clients")?;
    let futures = images
        .iter()
        .map(|i| engine.verify_image(i, namespace.as_deref()));
    let verdicts = futures_util::future::join_all(futures).await;
    match output {
        Output::Text => {
            for v in &verdicts {
                println!("{v}");
            }
        }
        Output::Json => {
            let all = verdicts.iter().all(|v| v.verdict.is_allowed());
            let doc = serde_json::json!({ "allowed": all, "images": verdicts });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
    }
    Ok(if verdicts.iter().all(|v| v.verdict.is_allowed()) {
        exit::ALLOWED
    } else {
        exit::DENIED
    })
}
