//! Command line: `verify`, `check-config`, `serve`. Exit codes are a contract:
//! 0 all allowed, 1 any denied, 2 usage or config error.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Admit only container images with verified cosign signatures"
)]
pub struct Cli {
    /// Log format (logs go to stderr).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Verify images against the policy: exit 0 if all are allowed, 1 if any is denied.
    Verify {
        /// Config file (YAML).
        #[arg(long, short)]
        config: PathBuf,
        /// Output format.
        #[arg(long, short, value_enum, default_value = "text")]
        output: Output,
        /// Namespace to match rules' `namespaces:` against (rules restricted to namespaces
        /// do not apply without it).
        #[arg(long, short)]
        namespace: Option<String>,
        /// Images to verify.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Serve kube-apiserver's ImageReviews (ImagePolicyWebhook backend).
    Serve {
        /// Config file (YAML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Make a throwaway CA, a server certificate and a kube-apiserver client certificate.
    DevCerts {
        /// Output directory.
        #[arg(long, default_value = "tls")]
        out: PathBuf,
        /// Server certificate names (DNS names or IPs), e.g. portcullis.portcullis.svc.
        #[arg(long = "san", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        sans: Vec<String>,
    },
    /// Validate a config file and print every problem.
    CheckConfig {
        /// Config file (YAML).
        config: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Process exit codes.
pub mod exit {
    pub const ALLOWED: u8 = 0;
    pub const DENIED: u8 = 1;
    pub const USAGE: u8 = 2;
}
