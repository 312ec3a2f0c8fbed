//! # Portcullis
//!
//! An admission gate for Kubernetes: kube-apiserver's ImagePolicyWebhook backend (and a CLI
//! for CI) that admits an image only when its cosign signature verifies with a trusted key.
//!
//! One request flows one way:
//!
//! ```text
//! ImageReview / CLI args
//!   → reference  parse + normalise every image             (reference.rs)
//!   → policy     find the governing rule, before any I/O     (policy.rs, config.rs)
//!   → registry   resolve tag → digest, bytes hashed          (registry.rs)
//!   → evidence   fetch the cosign `.sig` artifact            (evidence.rs)
//!   → verify     pure signature + payload checks             (verify.rs)
//!   → verdict    Allowed | Denied(reasons naming the image)  (verdict.rs)
//! ```
//!
//! [`engine::Engine`] wires these stages; `cli` and `server` are thin adapters over it.
#![forbid(unsafe_code)]

pub mod cache;
pub mod cli;
pub mod config;
pub mod engine;
pub mod evidence;
pub mod pki;
pub mod policy;
pub mod reference;
pub mod registry;
pub mod review;
pub mod server;
pub mod telemetry;
pub mod verdict;
pub mod verify;
