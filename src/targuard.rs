//! A guard in front of the `tar` crate for untrusted layers. The crate
//! reads GNU long names (`L`, `K`) and PAX extension headers (`x`, `g`)
//! whole into memory, whatever size their header claims: a small gzip
//! layer could make it allocate gigabytes. The guard follows the stream's
//! 512-byte headers as the bytes pass through (without copying them) and
//! fails the read as soon as an extension header claims more than
//! [`MAX_EXTENSION`] bytes.
//!
//! To find the next header it must know each entry's length: the header's
//! size field, unless a preceding PAX header gave a `size` record, which it
//! reads (PAX data is small, by the same bound).

use std::io::{self, Read};

/// The largest extension header accepted (long names, PAX records,
/// `SCHILY.xattr` values).
pub const MAX_EXTENSION: u64 = 1 << 20;

const BLOCK: usize = 512;

pub struct TarGuard<R> {
    inner: R,
    header: [u8; BLOCK],
    /// Bytes of the current header received so far.
    header_fill: usize,
    /// Bytes of data and padding before the next header.
    remaining: u64,
    /// The data of a PAX header being read, and its length.
    pax: Option<(Vec<u8>, usize)>,
    /// A `size` record for the next entry.
    pax_size: Option<u64>,
}

impl<R: Read> TarGuard<R> {
    pub fn new(inner: R) -> Self {
        TarGuard {
            inner,
            header: [0; BLOCK],
            header_fill: 0,
            remaining: 0,
            pax: None,
            pax_size: None,
        }
    }

    /// Follows `data`, the next bytes of the stream.
    fn observe(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = (self.remaining.min(data.len() as u64)) as usize;
                if let Some((buf, len)) = &mut self.pax {
                    let want = (*len - buf.len()).min(n);
                    buf.extend_from_slice(&data[..want]);
                }
                self.remaining -= n as u64;
                data = &data[n..];
                if self.remaining == 0 {
                    self.finish_pax();
                }
                continue;
            }
            let n = (BLOCK - self.header_fill).min(data.len());
            self.header[self.header_fill..self.header_fill + n].copy_from_slice(&data[..n]);
            self.header_fill += n;
            data = &data[n..];
            if self.header_fill == BLOCK {
                self.header_fill = 0;
                self.on_header()?;
            }
        }
        Ok(())
    }

    fn on_header(&mut self) -> io::Result<()> {
        if self.header.iter().all(|&b| b == 0) {
            return Ok(()); // end-of-archive blocks
        }
        let kind = self.header[156];
        let size = parse_size(&self.header[124..136])
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "a tar header with an invalid size"))?;
        let extension = matches!(kind, b'L' | b'K' | b'x' | b'g' | b'X');
        if extension && size > MAX_EXTENSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a tar extension header ({}) of {size} bytes, more than the {MAX_EXTENSION} accepted",
                    kind as char
                ),
            ));
        }
        let len = if extension {
            size
        } else {
            self.pax_size.take().unwrap_or(size)
        };
        if matches!(kind, b'x' | b'X') {
            self.pax = Some((Vec::with_capacity(len as usize), len as usize));
        }
        self.remaining = len.div_ceil(BLOCK as u64) * BLOCK as u64;
        if self.remaining == 0 {
            self.finish_pax();
        }
        Ok(())
    }

    /// Reads the `size` record of a completed PAX header.
    fn finish_pax(&mut self) {
        let Some((data, _)) = self.pax.take() else { return };
        let mut rest = &data[..];
        // Records: "<len> <key>=<value>\n".
        while let Some(space) = rest.iter().position(|&b| b == b' ') {
            let Some(len) = std::str::from_utf8(&rest[..space])
                .ok()
                .and_then(|l| l.parse::<usize>().ok())
            else {
                return;
            };
            if len <= space || len > rest.len() {
                return;
            }
            let record = &rest[space + 1..len];
            if let Some(value) = record.strip_prefix(b"size=") {
                let value = value.strip_suffix(b"\n").unwrap_or(value);
                self.pax_size = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            }
            rest = &rest[len..];
        }
    }
}

/// A header's size field: octal text, or base-256 when the top bit is set.
fn parse_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut n: u64 = (field[0] & 0x7f) as u64;
        for &b in &field[1..] {
            n = n.checked_mul(256)?.checked_add(b as u64)?;
        }
        return Some(n);
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u8, size: u64) -> [u8; BLOCK] {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_path("x").unwrap();
        h.set_cksum();
        *h.as_bytes()
    }

    fn read_all(data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        // Small reads: headers split across calls.
        let mut guard = TarGuard::new(io::Cursor::new(data.to_vec()));
        let mut buf = [0u8; 7];
        loop {
            let n = guard.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn a_huge_extension_header_is_refused() {
        let mut data = header(b'x', 64 << 20).to_vec();
        data.extend_from_slice(&[b'a'; 4096]);
        let err = read_all(&data).unwrap_err();
        assert!(err.to_string().contains("extension header"), "{err}");
        let mut data = header(b'L', MAX_EXTENSION + 1).to_vec();
        data.extend_from_slice(&[0; 1024]);
        assert!(read_all(&data).is_err());
    }

    #[test]
    fn real_archives_pass_through_unchanged() {
        let mut builder = tar::Builder::new(Vec::new());
        let long = "d/".repeat(200) + "file";
        let mut h = tar::Header::new_gnu();
        h.set_size(1000);
        builder.append_data(&mut h, &long, &[7u8; 1000][..]).unwrap();
        // A PAX size record overriding the header's size field.
        let mut pax = tar::Builder::new(Vec::new());
        let big = vec![1u8; 3000];
        let mut h = tar::Header::new_ustar();
        h.set_size(3000);
        pax.append_pax_extensions([("size", b"3000".as_slice()), ("SCHILY.xattr.user.a", b"v")])
            .unwrap();
        pax.append_data(&mut h, "p", &big[..]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(5);
        builder.append_data(&mut h, "plain", &b"hello"[..]).unwrap();
        for data in [builder.into_inner().unwrap(), pax.into_inner().unwrap()] {
            assert_eq!(read_all(&data).unwrap(), data);
            // And the tar crate still reads every entry through the guard.
            let mut archive = tar::Archive::new(TarGuard::new(io::Cursor::new(data.clone())));
            assert!(archive.entries().unwrap().count() >= 1);
        }
    }

    #[test]
    fn sizes_in_octal_and_base_256() {
        assert_eq!(parse_size(b"00000001750\0"), Some(1000));
        assert_eq!(parse_size(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]), Some(256));
        assert_eq!(parse_size(b"           \0"), Some(0));
        assert_eq!(parse_size(b"notoctal!!!\0"), None);
    }
}
