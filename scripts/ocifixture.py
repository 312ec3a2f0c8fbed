"""Shared OCI plumbing for the fixture generators (gen-fixtures.py, gen-attestations.py):
a blob store and tiny deterministic single-layer OCI images."""

import base64
import gzip
import hashlib
import io
import json
import tarfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class Blobs(dict):
    """digest -> base64 bytes, as plan.json stores them."""

    def add(self, data: bytes) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self[digest] = base64.b64encode(data).decode()
        return {"digest": digest, "size": len(data)}


def manifest_bytes(config: dict, layers: list) -> bytes:
    return json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers},
        separators=(",", ":"),
    ).encode()


def layer_tar(text: str) -> bytes:
    """A gzip tar holding fixture.txt = text (fixed mtimes: the bytes are reproducible)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        body = text.encode()
        info = tarfile.TarInfo("fixture.txt")
        info.size = len(body)
        info.mtime = 1717200000
        tar.addfile(info, io.BytesIO(body))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(buf.getvalue())
    return out.getvalue()


def image(blobs: Blobs, text: str, label: str) -> tuple[bytes, str]:
    """A tiny deterministic OCI image whose blobs go into `blobs`; returns (manifest, digest)."""
    layer = layer_tar(text)
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2024-06-01T00:00:00Z",
            "config": {"Labels": {"org.example.portcullis.fixture": label}},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    manifest = manifest_bytes(
        {"mediaType": OCI_CONFIG, **blobs.add(config)},
        [{"mediaType": OCI_LAYER, **blobs.add(layer)}],
    )
    return manifest, "sha256:" + hashlib.sha256(manifest).hexdigest()
