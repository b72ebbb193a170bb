//! The chunk codec of rfs's `.fl` format: content-addressed, compressed and
//! encrypted pieces of files.
//!
//! For a piece `p` (at most 512 KiB):
//! `key = BLAKE2b-256(p)`; the stored blob is
//! `AES-256-GCM(key, nonce = key[0..12], snappy_raw(p))` with the tag
//! appended; `id = BLAKE2b-256(blob)`. The store keeps the blob under `id`.
//! Identical content gives identical ids (dedup for free), and a store's
//! operator cannot read content without the flist that holds the keys.
//! Decoding checks both hashes: a blob that is not what its id says, or
//! that does not decrypt to what its key says, is an error, never data.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};

/// Pieces files are cut into; every piece but a file's last has this size
/// (rfs readers compute a piece's index as offset / CHUNK_SIZE).
pub const CHUNK_SIZE: usize = 512 << 10;

/// A chunk reference, as the flist's `block` table holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkRef {
    /// BLAKE2b-256 of the stored blob: its name in the store.
    pub id: [u8; 32],
    /// BLAKE2b-256 of the plain piece: the decryption key.
    pub key: [u8; 32],
}

impl ChunkRef {
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("chunk {0} does not match its id (corrupt or wrong blob)")]
    WrongId(String),
    #[error("chunk {0} does not decrypt with its key")]
    Decrypt(String),
    #[error("chunk {0} does not decompress")]
    Decompress(String),
    #[error("chunk {0} decodes to content that does not match its key")]
    WrongKey(String),
}

pub fn blake2b256(data: &[u8]) -> [u8; 32] {
    let hash = blake2b_simd::Params::new().hash_length(32).hash(data);
    let mut out = [0u8; 32];
    out.copy_from_slice(hash.as_bytes());
    out
}

/// The largest blob a chunk encodes to: snappy's bound for a full piece
/// (32 + n + n/6 bytes) and AES-GCM's 16-byte tag. A store's answer longer
/// than this is refused before it is read whole.
pub const MAX_BLOB: usize = 32 + CHUNK_SIZE + CHUNK_SIZE / 6 + 16;

/// A piece a store gave as it is (no blob around it), checked against
/// the key.
pub fn check_piece(chunk: &ChunkRef, piece: Vec<u8>) -> Result<Vec<u8>, CodecError> {
    if blake2b256(&piece) == chunk.key {
        Ok(piece)
    } else {
        Err(CodecError::WrongKey(chunk.id_hex()))
    }
}

/// Encodes one piece: its reference and the blob to store.
pub fn encode(piece: &[u8]) -> (ChunkRef, Vec<u8>) {
    let key = blake2b256(piece);
    let compressed = snap::raw::Encoder::new()
        .compress_vec(piece)
        .expect("snappy compresses any input below 4 GiB");
    let cipher = Aes256Gcm::new_from_slice(&key).expect("32-byte key");
    let blob = cipher
        .encrypt(Nonce::from_slice(&key[..12]), compressed.as_slice())
        .expect("AES-GCM encrypts any input");
    let id = blake2b256(&blob);
    (ChunkRef { id, key }, blob)
}

/// Decodes a blob fetched for `chunk`, checking it on the way.
pub fn decode(chunk: &ChunkRef, blob: &[u8]) -> Result<Vec<u8>, CodecError> {
    let name = || chunk.id_hex();
    if blake2b256(blob) != chunk.id {
        return Err(CodecError::WrongId(name()));
    }
    let cipher = Aes256Gcm::new_from_slice(&chunk.key).expect("32-byte key");
    let compressed = cipher
        .decrypt(Nonce::from_slice(&chunk.key[..12]), blob)
        .map_err(|_| CodecError::Decrypt(name()))?;
    let len = snap::raw::decompress_len(&compressed).map_err(|_| CodecError::Decompress(name()))?;
    if len > CHUNK_SIZE {
        return Err(CodecError::Decompress(name()));
    }
    let piece = snap::raw::Decoder::new()
        .decompress_vec(&compressed)
        .map_err(|_| CodecError::Decompress(name()))?;
    if blake2b256(&piece) != chunk.key {
        return Err(CodecError::WrongKey(name()));
    }
    Ok(piece)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_blob_is_within_max_blob() {
        assert!(snap::raw::max_compress_len(CHUNK_SIZE) + 16 <= MAX_BLOB);
        // Bytes that do not compress at all: the worst case.
        let mut x = 0x9e3779b97f4a7c15u64;
        let piece: Vec<u8> = (0..CHUNK_SIZE)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let (_, blob) = encode(&piece);
        assert!(
            blob.len() > CHUNK_SIZE && blob.len() <= MAX_BLOB,
            "{}",
            blob.len()
        );
    }

    #[test]
    fn round_trip_and_dedup() {
        let piece: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (a, blob) = encode(&piece);
        let (b, blob2) = encode(&piece);
        assert_eq!(a, b);
        assert_eq!(blob, blob2, "encoding is deterministic");
        assert_eq!(decode(&a, &blob).unwrap(), piece);
        assert!(blob.len() < piece.len(), "not compressed");
        assert!(
            !blob.windows(16).any(|w| w == &piece[1000..1016]),
            "not encrypted"
        );
    }

    #[test]
    fn corrupt_blobs_and_keys_are_errors() {
        let (chunk, mut blob) = encode(b"some content");
        blob[3] ^= 1;
        assert!(matches!(decode(&chunk, &blob), Err(CodecError::WrongId(_))));
        let (chunk, blob) = encode(b"some content");
        let wrong_key = ChunkRef {
            key: blake2b256(b"other"),
            ..chunk
        };
        assert!(matches!(decode(&wrong_key, &blob), Err(CodecError::Decrypt(_))));
    }

    #[test]
    fn known_answer() {
        // BLAKE2b-256 of the empty string (RFC 7693 parameters, 32-byte output).
        assert_eq!(
            hex::encode(blake2b256(b"")),
            "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8"
        );
    }
}
