#!/usr/bin/env python3
"""Generate fixtures/independent/: cosign-format images and signatures made with Python's
`cryptography` (an implementation independent of Portcullis and of sigstore-rs).

Writes:
  fixtures/independent/plan.json  -- blobs, manifests to push, and the expected verdicts
  keys/independent-*.pub / *.pem  -- TEST-ONLY key pairs (P-256, P-384, RSA-3072, Ed25519)

The test harness pushes plan.json into a real docker-registry and checks every case.
Re-running makes new keys and signatures (ECDSA is randomised); image digests are stable.

Usage: python3 scripts/gen-fixtures.py   (from the repository root; needs python3-cryptography)
"""

import base64
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ocifixture  # noqa: E402
from ocifixture import OCI_CONFIG, OCI_MANIFEST, manifest_bytes  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "independent")
KEYS = os.path.join(ROOT, "keys")

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIG_ANNOTATION = "dev.cosignproject.cosign/signature"

blobs = ocifixture.Blobs()


def add_blob(data: bytes) -> dict:
    return blobs.add(data)


def image(name: str) -> tuple[bytes, str]:
    """A tiny deterministic OCI image; returns (manifest bytes, digest)."""
    return ocifixture.image(blobs, f"portcullis independent fixture {name}\n", name)


def payload(repo: str, digest: str, kind: str = "cosign container image signature") -> bytes:
    # Byte-for-byte the shape cosign writes (Go's json.Marshal: no spaces, this key order).
    return (
        '{"critical":{"identity":{"docker-reference":"%s"},"image":{"docker-manifest-digest":"%s"},'
        '"type":"%s"},"optional":null}' % (repo, digest, kind)
    ).encode()


def sig_manifest(layers: list) -> bytes:
    """A cosign-shaped .sig manifest; `layers` are (payload bytes, signature b64 or None, media type)."""
    config = json.dumps(
        {"architecture": "", "config": {}, "created": "0001-01-01T00:00:00Z", "os": "",
         "rootfs": {"type": "layers", "diff_ids": []}},
        separators=(",", ":"),
    ).encode()
    descs = []
    for body, sig, media_type in layers:
        d = {"mediaType": media_type, **add_blob(body)}
        if sig is not None:
            d["annotations"] = {SIG_ANNOTATION: sig}
        descs.append(d)
    return manifest_bytes({"mediaType": OCI_CONFIG, **add_blob(config)}, descs)


def write_key(name: str, private_key) -> None:
    pub = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    priv = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with open(os.path.join(KEYS, f"independent-{name}.pub"), "wb") as f:
        f.write(pub)
    with open(os.path.join(KEYS, f"independent-{name}.pem"), "wb") as f:
        f.write(priv)


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    keys = {
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=3072),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
        "stranger": ec.generate_private_key(ec.SECP256R1()),
    }
    for name, k in keys.items():
        write_key(name, k)

    def sign(key_name: str, data: bytes) -> str:
        k = keys["rsa" if key_name == "rsa-pss" else key_name]
        if key_name in ("p256", "stranger"):
            sig = k.sign(data, ec.ECDSA(hashes.SHA256()))
        elif key_name == "p384":
            sig = k.sign(data, ec.ECDSA(hashes.SHA384()))
        elif key_name == "rsa":
            sig = k.sign(data, padding.PKCS1v15(), hashes.SHA256())
        elif key_name == "rsa-pss":
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
            sig = keys["rsa"].sign(data, pss, hashes.SHA256())
        else:
            sig = k.sign(data)
        return base64.b64encode(sig).decode()

    pushes, cases = [], []

    def push_image(name: str) -> tuple[str, str]:
        repo = f"independent/{name}"
        m, d = image(name)
        pushes.append({"repository": repo, "reference": "v1", "mediaType": OCI_MANIFEST,
                       "manifest": base64.b64encode(m).decode()})
        return repo, d

    def push_sig(repo: str, digest: str, layers: list) -> None:
        m = sig_manifest(layers)
        tag = digest.replace(":", "-") + ".sig"
        pushes.append({"repository": repo, "reference": tag, "mediaType": OCI_MANIFEST,
                       "manifest": base64.b64encode(m).decode()})

    def case(name, repo, digest, expect, reason=None, keys_used=("p256",)):
        cases.append({"name": name, "repository": repo, "tag": "v1", "digest": digest,
                      "keys": [f"independent-{k}.pub" for k in keys_used],
                      "expect": expect, "reason_contains": reason})

    # Positive controls: each key type, signed over the exact payload bytes (RSA twice:
    # PKCS#1 v1.5, what cosign signs with, and PSS with a digest-length salt).
    for kt in ("p256", "p384", "rsa", "rsa-pss", "ed25519"):
        repo, d = push_image(f"signed-{kt}")
        p = payload(repo, d)
        push_sig(repo, d, [(p, sign(kt, p), SIMPLE_SIGNING)])
        case(f"signed-{kt}", repo, d, "allow", None, ("rsa" if kt == "rsa-pss" else kt,))

    # Tampered payload: signed, then one byte changed (layer digest matches the new bytes).
    repo, d = push_image("tampered-payload")
    p = payload(repo, d)
    sig = sign("p256", p)
    tampered = p.replace(b'"optional":null', b'"optional":nulL')
    push_sig(repo, d, [(tampered, sig, SIMPLE_SIGNING)])
    case("tampered-payload", repo, d, "deny", "not by a trusted key")

    # One flipped bit in the signature (in the middle of the DER `s` integer).
    repo, d = push_image("flipped-bit")
    p = payload(repo, d)
    raw = bytearray(base64.b64decode(sign("p256", p)))
    raw[-5] ^= 0x01
    push_sig(repo, d, [(p, base64.b64encode(bytes(raw)).decode(), SIMPLE_SIGNING)])
    case("flipped-bit", repo, d, "deny", "not by a trusted key")

    # A valid signature for another digest, replayed under this image's .sig tag.
    repo, d = push_image("replayed")
    other_repo, other_d = push_image("replay-source")
    p = payload(other_repo, other_d)
    push_sig(repo, d, [(p, sign("p256", p), SIMPLE_SIGNING)])
    case("replayed", repo, d, "deny", "for another image")
    case("replay-source-unsigned", other_repo, other_d, "deny", "no signatures found")

    # A .sig whose only layer is not a signature.
    repo, d = push_image("non-signature-layer")
    push_sig(repo, d, [(b'{"hello":"world"}', None, "application/vnd.example.note.v1+json")])
    case("non-signature-layer", repo, d, "deny", "none is a cosign signature")

    # A non-signature layer first, a valid signature second: other layers are ignored.
    repo, d = push_image("mixed-layers")
    p = payload(repo, d)
    push_sig(repo, d, [(b"{}", "bm90IGEgc2lnbmF0dXJl", "application/octet-stream"),
                       (p, sign("p256", p), SIMPLE_SIGNING)])
    case("mixed-layers", repo, d, "allow")

    # Signed by a key nobody trusts, then an invalid one by the trusted key: still denied.
    repo, d = push_image("stranger")
    p = payload(repo, d)
    push_sig(repo, d, [(p, sign("stranger", p), SIMPLE_SIGNING)])
    case("stranger", repo, d, "deny", "not by a trusted key")

    # Valid signature by a trusted key over a payload that is not a container image signature.
    repo, d = push_image("wrong-type")
    p = payload(repo, d, kind="cosign container image attestation")
    push_sig(repo, d, [(p, sign("p256", p), SIMPLE_SIGNING)])
    case("wrong-type", repo, d, "deny", "has payload type")

    # Several signatures, only the last valid: one valid layer suffices.
    repo, d = push_image("many-signatures")
    p = payload(repo, d)
    push_sig(repo, d, [(p, sign("stranger", p), SIMPLE_SIGNING),
                       (tampered, sign("p256", p), SIMPLE_SIGNING),
                       (p, sign("p256", p), SIMPLE_SIGNING)])
    case("many-signatures", repo, d, "allow")

    plan = {
        "what": "cosign-format images and signatures made by Python cryptography; see README.md",
        "made_by": "python3 scripts/gen-fixtures.py (cryptography %s)" % __import__("cryptography").__version__,
        "blobs": blobs,
        "pushes": pushes,
        "cases": cases,
    }
    with open(os.path.join(OUT, "plan.json"), "w") as f:
        json.dump(plan, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {len(pushes)} manifests, {len(blobs)} blobs, {len(cases)} cases to {OUT}/plan.json")


if __name__ == "__main__":
    main()
