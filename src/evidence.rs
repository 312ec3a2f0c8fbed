//! Evidence for one image digest: where cosign keeps signatures and attestations, and what
//! is there.
//!
//! Legacy cosign layout, in the image's **own** repository (evidence belongs to a repository,
//! not to a digest: the same digest elsewhere may be unsigned):
//! - tag `sha256-<hex>.sig`: each layer of type `application/vnd.dev.cosign.simplesigning.v1+json`
//!   with the annotation `dev.cosignproject.cosign/signature` is one signature over its blob;
//! - tag `sha256-<hex>.att`: each layer of type `application/vnd.dsse.envelope.v1+json` is one
//!   DSSE envelope (an in-toto statement).

use crate::reference::{Digest, Repository};
use crate::registry::manifest::Descriptor;
use crate::registry::{FetchedManifest, RegistryClient, RegistryError};
use crate::verify::dsse::DSSE_ENVELOPE;
use crate::verify::{SIGNATURE_ANNOTATION, SIMPLE_SIGNING};

/// Which cosign artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Signatures,
    Attestations,
}

impl Kind {
    fn suffix(self) -> &'static str {
        match self {
            Self::Signatures => ".sig",
            Self::Attestations => ".att",
        }
    }
}

/// A `.sig` or `.att` manifest found for an image.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// `registry/repo:sha256-<hex>.sig`, for reasons.
    pub location: String,
    pub manifest: FetchedManifest,
}

/// One signature layer: the blob to fetch and the signature over it.
#[derive(Debug, Clone)]
pub struct SignatureLayer {
    pub blob: Descriptor,
    pub signature: String,
}

/// Where the `kind` artifact of `digest` in `repo` lives, for reasons.
pub fn location(repo: &Repository, digest: &Digest, kind: Kind) -> String {
    format!("{repo}:{}", digest.cosign_tag(kind.suffix()))
}

/// Fetches the `kind` manifest of `digest` in `repo`; `None` when the registry has none.
/// Any other failure is an error (a registry outage must not look like "unsigned").
pub async fn artifact(
    registry: &RegistryClient,
    repo: &Repository,
    digest: &Digest,
    kind: Kind,
) -> Result<Option<Artifact>, RegistryError> {
    match registry
        .fetch_manifest(repo, &digest.cosign_tag(kind.suffix()))
        .await
    {
        Ok(manifest) => Ok(Some(Artifact {
            location: location(repo, digest, kind),
            manifest,
        })),
        Err(RegistryError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Artifact {
    /// The signature layers, and how many other layers there were (ignored).
    pub fn signature_layers(&self) -> (Vec<SignatureLayer>, usize) {
        let mut sigs = Vec::new();
        let mut others = 0;
        for layer in &self.manifest.manifest.layers {
            match layer.annotations.get(SIGNATURE_ANNOTATION) {
                Some(sig) if layer.media_type == SIMPLE_SIGNING && !sig.is_empty() => {
                    sigs.push(SignatureLayer {
                        blob: layer.clone(),
                        signature: sig.clone(),
                    })
                }
                _ => others += 1,
            }
        }
        (sigs, others)
    }

    /// The DSSE envelope layers.
    pub fn envelope_layers(&self) -> Vec<Descriptor> {
        self.manifest
            .manifest
            .layers
            .iter()
            .filter(|l| l.media_type == DSSE_ENVELOPE)
            .cloned()
            .collect()
    }
}
