//! Evidence for one image digest: where cosign keeps signatures, and what is there.
//!
//! Legacy cosign layout: tag `sha256-<hex>.sig` in the image's **own** repository (signatures
//! belong to a repository, not to a digest: the same digest elsewhere may be unsigned). Each
//! layer of media type `application/vnd.dev.cosign.simplesigning.v1+json` with the annotation
//! `dev.cosignproject.cosign/signature` is one signature over that layer's blob.

use crate::reference::{Digest, Repository};
use crate::registry::manifest::Descriptor;
use crate::registry::{FetchedManifest, RegistryClient, RegistryError};
use crate::verify::{SIGNATURE_ANNOTATION, SIMPLE_SIGNING};

/// The `.sig` manifest found for an image.
#[derive(Debug, Clone)]
pub struct SignatureArtifact {
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

/// Where the legacy signature tag of `digest` in `repo` lives, for reasons.
pub fn signature_location(repo: &Repository, digest: &Digest) -> String {
    format!("{repo}:{}", digest.cosign_tag(".sig"))
}

/// Fetches the `.sig` manifest of `digest` in `repo`; `None` when the registry has none.
/// Any other failure is an error (a registry outage must not look like "unsigned").
pub async fn signature_artifact(
    registry: &RegistryClient,
    repo: &Repository,
    digest: &Digest,
) -> Result<Option<SignatureArtifact>, RegistryError> {
    match registry
        .fetch_manifest(repo, &digest.cosign_tag(".sig"))
        .await
    {
        Ok(manifest) => Ok(Some(SignatureArtifact {
            location: signature_location(repo, digest),
            manifest,
        })),
        Err(RegistryError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

impl SignatureArtifact {
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
}
