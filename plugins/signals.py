"""Signals besides the embedding: ``exact`` (same bytes or same pixels) and ``phash`` (a
perceptual hash, from the maintained ``imagehash`` library). Each turns a hash into a unit
vector of +-1/8 entries, so that cosine similarity is 1 - 2 * Hamming distance / 64 and the
same indexes and walk serve every signal."""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

import curate
from curate.errors import setting
from curate.image_source import image_bytes

BITS = 64
# An image whose 32x32 thumbnail varies by less than this (standard deviation, of 255, in every
# channel) is flat: its pHash is the same for every colour.
FLAT_SPREAD = 2.0


def bits_to_vector(bits) -> np.ndarray:
    bits = np.asarray(bits, dtype=bool).reshape(-1)
    return np.where(bits, 1.0, -1.0).astype(np.float32) / np.sqrt(len(bits), dtype=np.float32)


class Exact(curate.Signal):
    """Identical file bytes, or identical pixels where the image was decoded at full size. (An
    image decoded in JPEG draft mode is compared by its bytes only: reduced-size pixels could
    hide a small difference.) A match is a duplicate at score 1.0, whatever the model says."""

    name = "exact"
    description = "same bytes, or same pixels (score 1.0, no model needed to decide)"
    dim = BITS
    version = "1"
    default = 1.0
    verified = False      # the same bytes or pixels: proof on its own

    def fingerprint(self, image, path):
        digest = hashlib.blake2b(digest_size=BITS // 8)
        if image.info.get("draft"):
            digest.update(image_bytes(path))
        else:
            digest.update(f"{image.mode} {image.width}x{image.height}".encode())
            digest.update(image.tobytes())
        return bits_to_vector(np.unpackbits(np.frombuffer(digest.digest(), np.uint8)))

    def similarity(self, value):
        return 1.0 - 1e-6        # identical hashes only, whatever the user typed


class PerceptualHash(curate.Signal):
    """imagehash's pHash (DCT of a 32x32 greyscale thumbnail, 64 bits). Finds downscales,
    re-encodes, watermarks and greyscale copies that an embedding may miss; blind to crops,
    mirrors and banners, which the embedding finds."""

    name = "phash"
    description = "perceptual hash (imagehash pHash, 64 bits); threshold: Hamming distance"
    dim = BITS
    version = "imagehash-phash-8-flat-2"
    unit = "distance"
    default = 10

    def fingerprint(self, image, path):
        """pHash; for a flat or nearly flat image, whose hash would carry no information (a red
        and a green square share it), a digest of its colours instead: it matches only the
        same flat image."""
        import imagehash
        small = np.asarray(image.convert("RGB").resize((32, 32), Image.Resampling.BOX), dtype=np.float32)
        if small.std(axis=(0, 1)).max() < FLAT_SPREAD:
            colour = np.round(small.mean(axis=(0, 1)) / 8).astype(np.uint8).tobytes()
            digest = hashlib.blake2b(b"flat " + colour, digest_size=BITS // 8).digest()
            return bits_to_vector(np.unpackbits(np.frombuffer(digest, np.uint8)))
        return bits_to_vector(imagehash.phash(image, hash_size=8).hash)

    def similarity(self, value):
        if not 0 <= float(value) <= BITS:
            raise curate.CurateError(f"{setting('signals')} phash={value}: a Hamming distance lies in 0..{BITS}")
        return 1.0 - 2.0 * float(value) / BITS - 1e-6

    def describe(self, similarity):
        return {"distance": int(round((1.0 - float(similarity)) * BITS / 2))}


@curate.hookimpl
def register_signals(register):
    register(Exact)
    register(PerceptualHash)
