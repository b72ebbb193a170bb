//! A tar reader for untrusted layers, exact on what real tools write.
//!
//! It reads the formats GNU tar, Go's `archive/tar` (Docker, BuildKit,
//! umoci), Python's `tarfile` and libarchive produce: v7, ustar (with its
//! name prefix), GNU (long names `L` / `K`, sparse `S` entries with any
//! number of extended sparse headers), and PAX (`x` records read by their
//! length prefix, so a value may hold any byte, newlines included; keys
//! are bytes, so an xattr name need not be UTF-8), including GNU tar's
//! three PAX sparse formats (0.0, 0.1 and 1.0), which are expanded here:
//! a sparse member reads as its whole content, holes as zeros.
//!
//! Untrusted input stays bounded: an extension header (long name, PAX
//! records) larger than [`MAX_EXTENSION`] is refused at its header, before
//! anything is buffered; sparse maps are bounded in entries and size.

use std::io::{self, Read};

/// The largest extension header accepted (long names, PAX records,
/// `SCHILY.xattr` values).
pub const MAX_EXTENSION: u64 = 1 << 20;

/// Regions a sparse map may hold.
const MAX_SPARSE_REGIONS: usize = 1 << 20;

/// The largest expanded size of a sparse member (1 TiB): a few bytes of
/// map could otherwise claim exabytes of zeros.
pub const MAX_SPARSE_SIZE: u64 = 1 << 40;

const BLOCK: usize = 512;

/// One member of the archive, extension headers applied.
#[derive(Debug, Clone, Default)]
pub struct Member {
    /// The type flag (`b'0'`, `b'5'`, ... ; `0` is read as `b'0'`).
    pub kind: u8,
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds, from the header (PAX `mtime` is among `pax`).
    pub mtime: i64,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Bytes the member's content reads as (a sparse member's real size).
    pub size: u64,
    /// Whether the member was stored sparse (its holes read as zeros).
    pub sparse: bool,
    /// Every PAX record of the member, in order (keys and values as bytes).
    pub pax: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A region of a sparse file's content stored in the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Region {
    offset: u64,
    len: u64,
}

/// Reading the current member's content.
#[derive(Debug, Default)]
struct Content {
    /// Bytes of stored data left in the archive for this member.
    stored: u64,
    /// Padding after the stored data, up to the next block.
    padding: u64,
    /// For sparse members: the map, the next region, and the position in
    /// the expanded content.
    sparse: Option<Sparse>,
}

#[derive(Debug)]
struct Sparse {
    regions: Vec<Region>,
    next: usize,
    pos: u64,
    size: u64,
}

pub struct TarReader<R> {
    inner: Counted<R>,
    /// Where the current member's first header (extension headers
    /// included) starts: a reader started there reads it whole.
    member_start: u64,
    content: Content,
    done: bool,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// The field up to its first NUL.
fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(n) => &field[..n],
        None => field,
    }
}

/// A numeric header field: octal text (NULs and spaces around it), or
/// base-256 when the top bit is set (`0xff` first: negative).
pub fn parse_number(field: &[u8]) -> Option<i128> {
    if field.is_empty() {
        return Some(0);
    }
    if field[0] & 0x80 != 0 {
        // Base-256, two's complement over the whole field when negative.
        if field.len() > 12 {
            return None;
        }
        let mut n: i128 = (field[0] & 0x7f) as i128;
        for &b in &field[1..] {
            n = n * 256 + b as i128;
        }
        if field[0] & 0x40 != 0 {
            n -= 1i128 << (8 * field.len() as u32 - 1);
        }
        if n > u64::MAX as i128 || n < i64::MIN as i128 {
            return None;
        }
        return Some(n);
    }
    let text = cstr(field);
    let text: &[u8] = {
        let start = text.iter().position(|&b| b != b' ').unwrap_or(text.len());
        let end = text.iter().rposition(|&b| b != b' ').map_or(start, |e| e + 1);
        &text[start..end.max(start)]
    };
    if text.is_empty() {
        return Some(0);
    }
    let mut n: i128 = 0;
    for &b in text {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        n = n.checked_mul(8)?.checked_add((b - b'0') as i128)?;
        if n > u64::MAX as i128 {
            return None;
        }
    }
    Some(n)
}

fn number_u64(field: &[u8], what: &str) -> io::Result<u64> {
    parse_number(field)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| invalid(format!("a tar header with an invalid {what}")))
}

/// A decimal number from a PAX record or a sparse map.
fn decimal(v: &[u8], what: &str) -> io::Result<u64> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| invalid(format!("invalid {what} {:?}", String::from_utf8_lossy(v))))
}

/// PAX records, each read by its length prefix: `"<len> <key>=<value>\n"`,
/// `<len>` counting the whole record. Values may hold any byte.
pub fn parse_pax(mut data: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    loop {
        // GNU tar and others may pad the data with NULs.
        if data.iter().all(|&b| b == 0) {
            return Ok(out);
        }
        let bad = |why: &str| invalid(format!("malformed pax extension: {why}"));
        let space = data
            .iter()
            .take(20)
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("a record without a length"))?;
        let len = std::str::from_utf8(&data[..space])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| bad("a record length that is not a number"))?;
        if len <= space + 1 || len > data.len() {
            return Err(bad("a record length beyond the header"));
        }
        let record = &data[space + 1..len];
        let record = record
            .strip_suffix(b"\n")
            .ok_or_else(|| bad("a record that does not end in a newline"))?;
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad("a record without '='"))?;
        if eq == 0 {
            return Err(bad("a record with an empty key"));
        }
        out.push((record[..eq].to_vec(), record[eq + 1..].to_vec()));
        data = &data[len..];
    }
}

/// A reader that counts the bytes read through it.
pub struct Counted<R> {
    pub inner: R,
    pub pos: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> Self {
        TarReader {
            inner: Counted { inner, pos: 0 },
            member_start: 0,
            content: Content::default(),
            done: false,
        }
    }

    /// Bytes of the archive read so far: right after [`Self::next_member`]
    /// gave a member, where its stored content starts.
    pub fn position(&self) -> u64 {
        self.inner.pos
    }

    /// Where the member [`Self::next_member`] gave last starts, headers
    /// included.
    pub fn member_start(&self) -> u64 {
        self.member_start
    }

    /// Reads exactly `buf`; false on a clean end before its first byte.
    fn read_block(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => return Err(invalid("the archive ends inside a header")),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn discard(&mut self, mut n: u64) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            let got = self.inner.read(&mut buf[..want])?;
            if got == 0 {
                return Err(invalid("the archive ends inside an entry"));
            }
            n -= got as u64;
        }
        Ok(())
    }

    /// Skips what is left of the current member.
    fn finish_member(&mut self) -> io::Result<()> {
        let n = self.content.stored.saturating_add(self.content.padding);
        self.content = Content::default();
        self.discard(n)
    }

    /// The whole (small) data of an extension header.
    fn read_extension(&mut self, kind: u8, size: u64) -> io::Result<Vec<u8>> {
        if size > MAX_EXTENSION {
            return Err(invalid(format!(
                "a tar extension header ({}) of {size} bytes, more than the {MAX_EXTENSION} accepted",
                kind as char
            )));
        }
        let mut data = vec![0u8; size as usize];
        self.inner
            .read_exact(&mut data)
            .map_err(|_| invalid("the archive ends inside an extension header"))?;
        self.discard(padding(size))?;
        Ok(data)
    }

    /// The next member, its extension headers applied; `None` at the end.
    pub fn next_member(&mut self) -> io::Result<Option<Member>> {
        if self.done {
            return Ok(None);
        }
        self.finish_member()?;
        self.member_start = self.inner.pos;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Option<Vec<(Vec<u8>, Vec<u8>)>> = None;
        let mut pending = false;
        loop {
            let mut h = [0u8; BLOCK];
            if !self.read_block(&mut h)? || h.iter().all(|&b| b == 0) {
                self.done = true;
                if pending {
                    return Err(invalid(
                        "extension headers describing a member, but no member follows",
                    ));
                }
                return Ok(None);
            }
            check_checksum(&h)?;
            let kind = if h[156] == 0 { b'0' } else { h[156] };
            let header_size = number_u64(&h[124..136], "size")?;
            match kind {
                b'L' | b'K' => {
                    let data = self.read_extension(kind, header_size)?;
                    let slot = if kind == b'L' {
                        &mut long_name
                    } else {
                        &mut long_link
                    };
                    if slot.is_some() {
                        return Err(invalid("two GNU long names describing the same member"));
                    }
                    *slot = Some(cstr(&data).to_vec());
                    pending = true;
                    continue;
                }
                b'x' | b'X' => {
                    let data = self.read_extension(kind, header_size)?;
                    if pax.is_some() {
                        return Err(invalid("two pax extensions describing the same member"));
                    }
                    pax = Some(parse_pax(&data)?);
                    pending = true;
                    continue;
                }
                b'g' => {
                    // Global records: yielded as a member of their own (they
                    // count in the member numbering), content skipped.
                    let data = self.read_extension(kind, header_size)?;
                    let member = Member {
                        kind,
                        path: cstr(&h[0..100]).to_vec(),
                        pax: parse_pax(&data).unwrap_or_default(),
                        ..Member::default()
                    };
                    if pending {
                        return Err(invalid(
                            "a global pax header between a member's extension headers",
                        ));
                    }
                    return Ok(Some(member));
                }
                _ => {}
            }
            return self
                .member(
                    &h,
                    kind,
                    header_size,
                    long_name,
                    long_link,
                    pax.unwrap_or_default(),
                )
                .map(Some);
        }
    }

    fn member(
        &mut self,
        h: &[u8; BLOCK],
        kind: u8,
        header_size: u64,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        pax: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> io::Result<Member> {
        let ustar = &h[257..263] == b"ustar\0";
        let gnu = &h[257..265] == b"ustar  \0";
        let mut path = cstr(&h[0..100]).to_vec();
        if ustar {
            let prefix = cstr(&h[345..500]);
            if !prefix.is_empty() {
                let mut p = prefix.to_vec();
                p.push(b'/');
                p.extend_from_slice(&path);
                path = p;
            }
        }
        if let Some(name) = long_name {
            path = name;
        }
        let mut link = long_link.unwrap_or_else(|| cstr(&h[157..257]).to_vec());
        let mut m = Member {
            kind,
            mode: u32::try_from(number_u64(&h[100..108], "mode")?)
                .map_err(|_| invalid("a tar header with an invalid mode"))?,
            // An unreadable owner is 0, as the tar crate and Go read an empty one.
            uid: number_u64(&h[108..116], "uid").unwrap_or(0),
            gid: number_u64(&h[116..124], "gid").unwrap_or(0),
            mtime: parse_number(&h[136..148])
                .and_then(|n| i64::try_from(n).ok())
                .ok_or_else(|| invalid("a tar header with an invalid mtime"))?,
            ..Member::default()
        };
        if matches!(kind, b'3' | b'4') && (ustar || gnu) {
            let dev = |f: &[u8], what| -> io::Result<u32> {
                u32::try_from(number_u64(f, what)?).map_err(|_| invalid(format!("an invalid {what}")))
            };
            m.dev_major = dev(&h[329..337], "device major")?;
            m.dev_minor = dev(&h[337..345], "device minor")?;
        }
        let mut stored = header_size;
        let mut sparse_size: Option<u64> = None;
        let mut sparse_major: Option<u64> = None;
        let mut sparse_minor: Option<u64> = None;
        let mut sparse_name: Option<Vec<u8>> = None;
        let mut sparse_map: Option<Vec<u8>> = None;
        let mut pairs: Vec<(Option<u64>, Option<u64>)> = Vec::new();
        let mut numblocks: Option<u64> = None;
        for (key, value) in &pax {
            match key.as_slice() {
                b"path" => path = value.clone(),
                b"linkpath" => link = value.clone(),
                b"size" => stored = decimal(value, "PAX size")?,
                b"uid" => m.uid = decimal(value, "PAX uid")?,
                b"gid" => m.gid = decimal(value, "PAX gid")?,
                b"GNU.sparse.name" => sparse_name = Some(value.clone()),
                b"GNU.sparse.size" | b"GNU.sparse.realsize" => {
                    sparse_size = Some(decimal(value, "GNU.sparse.size")?)
                }
                b"GNU.sparse.major" => sparse_major = Some(decimal(value, "GNU.sparse.major")?),
                b"GNU.sparse.minor" => sparse_minor = Some(decimal(value, "GNU.sparse.minor")?),
                b"GNU.sparse.numblocks" => numblocks = Some(decimal(value, "GNU.sparse.numblocks")?),
                b"GNU.sparse.map" => sparse_map = Some(value.clone()),
                b"GNU.sparse.offset" => {
                    if pairs.len() >= MAX_SPARSE_REGIONS {
                        return Err(invalid("a sparse map of too many regions"));
                    }
                    pairs.push((Some(decimal(value, "GNU.sparse.offset")?), None));
                }
                b"GNU.sparse.numbytes" => match pairs.last_mut() {
                    Some((_, n @ None)) => *n = Some(decimal(value, "GNU.sparse.numbytes")?),
                    _ => return Err(invalid("GNU.sparse.numbytes without GNU.sparse.offset")),
                },
                _ => {}
            }
        }
        m.path = path;
        m.link = link;
        m.pax = pax;
        self.content = Content {
            stored,
            padding: padding(stored),
            sparse: None,
        };
        // GNU sparse formats: the old header one, then the three PAX ones.
        let regions = if kind == b'S' {
            if !gnu {
                return Err(invalid("a GNU sparse entry (S) without a GNU header"));
            }
            sparse_size = Some(number_u64(&h[483..495], "sparse real size")?);
            Some(self.old_gnu_sparse_map(h)?)
        } else if sparse_major == Some(1) {
            if sparse_minor.unwrap_or(0) != 0 {
                return Err(invalid(format!(
                    "an unknown GNU sparse format {}.{}",
                    1,
                    sparse_minor.unwrap_or(0)
                )));
            }
            Some(self.sparse_map_1_0()?)
        } else if let Some(major) = sparse_major.filter(|&v| v != 0) {
            return Err(invalid(format!("an unknown GNU sparse format {major}")));
        } else if let Some(map) = sparse_map {
            // 0.1: "offset,size,offset,size,...".
            let numbers = map
                .split(|&b| b == b',')
                .map(|n| decimal(n, "GNU.sparse.map entry"))
                .collect::<io::Result<Vec<u64>>>()?;
            if numbers.len() % 2 != 0 || numbers.len() / 2 > MAX_SPARSE_REGIONS {
                return Err(invalid("a GNU.sparse.map of an odd or huge length"));
            }
            Some(
                numbers
                    .chunks(2)
                    .map(|c| Region {
                        offset: c[0],
                        len: c[1],
                    })
                    .collect(),
            )
        } else if numblocks.is_some() || !pairs.is_empty() {
            // 0.0: repeated GNU.sparse.offset / GNU.sparse.numbytes.
            pairs
                .iter()
                .map(|p| match *p {
                    (Some(offset), Some(len)) => Ok(Region { offset, len }),
                    _ => Err(invalid("GNU.sparse.offset without GNU.sparse.numbytes")),
                })
                .collect::<io::Result<Vec<Region>>>()
                .map(Some)?
        } else {
            None
        };
        if let Some(regions) = regions {
            if numblocks.is_some_and(|n| n != regions.len() as u64) {
                return Err(invalid("GNU.sparse.numblocks does not match the sparse map"));
            }
            let size = sparse_size.ok_or_else(|| invalid("a sparse member without its real size"))?;
            validate_sparse(&regions, size, self.content.stored)?;
            if let Some(name) = sparse_name {
                m.path = name;
            }
            m.sparse = true;
            m.size = size;
            if kind == b'S' {
                m.kind = b'0';
            }
            self.content.sparse = Some(Sparse {
                regions,
                next: 0,
                pos: 0,
                size,
            });
        } else {
            m.size = stored;
        }
        Ok(m)
    }

    /// The sparse map of a GNU `S` header: four regions in the header, then
    /// 21 in each extended header while the `isextended` byte is set.
    fn old_gnu_sparse_map(&mut self, h: &[u8; BLOCK]) -> io::Result<Vec<Region>> {
        let mut regions = Vec::new();
        let mut push = |entry: &[u8]| -> io::Result<()> {
            if entry.iter().all(|&b| b == 0) {
                return Ok(());
            }
            if regions.len() >= MAX_SPARSE_REGIONS {
                return Err(invalid("a sparse map of too many regions"));
            }
            regions.push(Region {
                offset: number_u64(&entry[..12], "sparse offset")?,
                len: number_u64(&entry[12..24], "sparse length")?,
            });
            Ok(())
        };
        for i in 0..4 {
            push(&h[386 + i * 24..386 + (i + 1) * 24])?;
        }
        let mut extended = h[482] != 0;
        while extended {
            let mut ext = [0u8; BLOCK];
            if !self.read_block(&mut ext)? {
                return Err(invalid("the archive ends inside a GNU sparse header"));
            }
            for i in 0..21 {
                push(&ext[i * 24..(i + 1) * 24])?;
            }
            extended = ext[504] != 0;
        }
        Ok(regions)
    }

    /// The sparse map at the start of a 1.0 member's data: decimal numbers,
    /// one a line (the count, then offset and size pairs), padded to a
    /// block.
    fn sparse_map_1_0(&mut self) -> io::Result<Vec<Region>> {
        let mut text: Vec<u8> = Vec::new();
        let mut used = 0usize;
        let mut next_number = |reader: &mut Self, text: &mut Vec<u8>| -> io::Result<u64> {
            loop {
                if let Some(nl) = text[used..].iter().position(|&b| b == b'\n') {
                    let n = decimal(&text[used..used + nl], "sparse map number")?;
                    used += nl + 1;
                    return Ok(n);
                }
                if reader.content.stored < BLOCK as u64 || text.len() as u64 >= MAX_EXTENSION * 16 {
                    return Err(invalid("a GNU sparse 1.0 map that does not end"));
                }
                let mut block = [0u8; BLOCK];
                reader
                    .inner
                    .read_exact(&mut block)
                    .map_err(|_| invalid("the archive ends inside a sparse map"))?;
                reader.content.stored -= BLOCK as u64;
                text.extend_from_slice(&block);
            }
        };
        let count = next_number(self, &mut text)?;
        if count > MAX_SPARSE_REGIONS as u64 {
            return Err(invalid("a sparse map of too many regions"));
        }
        let mut regions = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let offset = next_number(self, &mut text)?;
            let len = next_number(self, &mut text)?;
            regions.push(Region { offset, len });
        }
        // The rest of the map's last block is padding, already consumed.
        Ok(regions)
    }

    /// Reads the current member's content (holes of a sparse member as
    /// zeros).
    fn read_content(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let Some(sparse) = &mut self.content.sparse else {
            let want = (buf.len() as u64).min(self.content.stored) as usize;
            if want == 0 {
                return Ok(0);
            }
            let n = self.inner.read(&mut buf[..want])?;
            if n == 0 {
                return Err(invalid("the archive ends inside an entry"));
            }
            self.content.stored -= n as u64;
            return Ok(n);
        };
        // Past regions that end before the position (empty ones included).
        while sparse
            .regions
            .get(sparse.next)
            .is_some_and(|r| r.offset + r.len <= sparse.pos)
        {
            sparse.next += 1;
        }
        if sparse.pos >= sparse.size {
            return Ok(0);
        }
        match sparse.regions.get(sparse.next) {
            Some(r) if r.offset <= sparse.pos => {
                let want = (buf.len() as u64).min(r.offset + r.len - sparse.pos) as usize;
                let n = self.inner.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(invalid("the archive ends inside a sparse entry"));
                }
                sparse.pos += n as u64;
                self.content.stored -= n as u64;
                Ok(n)
            }
            next => {
                let hole_end = next.map_or(sparse.size, |r| r.offset);
                let n = (buf.len() as u64).min(hole_end - sparse.pos) as usize;
                buf[..n].fill(0);
                sparse.pos += n as u64;
                Ok(n)
            }
        }
    }

    /// A reader of the current member's content.
    pub fn content(&mut self) -> ContentReader<'_, R> {
        ContentReader(self)
    }
}

/// The content of the member [`TarReader::next_member`] returned last.
pub struct ContentReader<'a, R>(&'a mut TarReader<R>);

impl<R: Read> Read for ContentReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_content(buf)
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// The header checksum: the bytes summed with the checksum field read as
/// spaces, unsigned (POSIX) or signed (some old tars).
fn check_checksum(h: &[u8; BLOCK]) -> io::Result<()> {
    let stored =
        parse_number(&h[148..156]).ok_or_else(|| invalid("a tar header with an invalid checksum"))?;
    let (mut unsigned, mut signed) = (0i128, 0i128);
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += b as i128;
        signed += b as i8 as i128;
    }
    if stored != unsigned && stored != signed {
        return Err(invalid("archive header checksum mismatch"));
    }
    Ok(())
}

/// Regions in order, not overlapping, inside the real size, and their
/// lengths adding up to the data stored.
fn validate_sparse(regions: &[Region], size: u64, stored: u64) -> io::Result<()> {
    if size > MAX_SPARSE_SIZE {
        return Err(invalid(format!(
            "a sparse file of {size} bytes, more than the {MAX_SPARSE_SIZE} accepted"
        )));
    }
    // GNU tar reads each region's data from a block boundary, Go's
    // archive/tar reads them back to back: they agree (and GNU tar writes
    // them) only when every region with data but the last fills whole blocks.
    let with_data: Vec<&Region> = regions.iter().filter(|r| r.len > 0).collect();
    if let Some(r) = with_data.iter().rev().skip(1).find(|r| r.len % BLOCK as u64 != 0) {
        return Err(invalid(format!(
            "a sparse region of {} bytes at {}, not whole 512-byte blocks: tar readers disagree on such maps",
            r.len, r.offset
        )));
    }
    let mut end = 0u64;
    let mut total = 0u64;
    for r in regions {
        let r_end = r
            .offset
            .checked_add(r.len)
            .ok_or_else(|| invalid("a sparse region beyond any size"))?;
        if r.offset < end || r_end > size {
            return Err(invalid(
                "sparse regions out of order, overlapping, or past the file's size",
            ));
        }
        end = r_end;
        total += r.len;
    }
    if total != stored {
        return Err(invalid(format!(
            "a sparse map of {total} bytes of data for {stored} bytes stored"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(data: &[u8]) -> io::Result<Vec<(Member, Vec<u8>)>> {
        let mut r = TarReader::new(data);
        let mut out = Vec::new();
        while let Some(m) = r.next_member()? {
            let mut content = Vec::new();
            r.content().read_to_end(&mut content)?;
            out.push((m, content));
        }
        Ok(out)
    }

    fn header(kind: u8, name: &str, size: u64) -> [u8; BLOCK] {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_path(name).unwrap();
        h.set_mode(0o644);
        h.set_cksum();
        *h.as_bytes()
    }

    fn with_data(h: [u8; BLOCK], data: &[u8]) -> Vec<u8> {
        let mut out = h.to_vec();
        out.extend_from_slice(data);
        out.resize(out.len() + padding(data.len() as u64) as usize, 0);
        out
    }

    fn record(key: &[u8], value: &[u8]) -> Vec<u8> {
        let body = [b" ".as_slice(), key, b"=", value, b"\n"].concat();
        let mut len = body.len() + 1;
        while len.to_string().len() + body.len() != len {
            len = len.to_string().len() + body.len();
        }
        [len.to_string().into_bytes(), body].concat()
    }

    #[test]
    fn pax_values_may_hold_newlines_and_keys_any_byte() {
        let records = [
            record(
                b"SCHILY.xattr.security.capability",
                b"\x01\x00\x00\x02\x0a\x00\x20",
            ),
            record(b"SCHILY.xattr.user.\xff\xfe", b"raw"),
            record(b"path", b"dir/new\nline"),
        ]
        .concat();
        let mut data = with_data(header(b'x', "PaxHeaders/x", records.len() as u64), &records);
        data.extend(with_data(header(b'0', "x", 3), b"abc"));
        data.extend_from_slice(&[0; 1024]);
        let members = read_all(&data).unwrap();
        assert_eq!(members.len(), 1);
        let (m, content) = &members[0];
        assert_eq!(m.path, b"dir/new\nline");
        assert_eq!(content, b"abc");
        assert_eq!(m.pax[0].1, b"\x01\x00\x00\x02\x0a\x00\x20");
        assert_eq!(m.pax[1].0, b"SCHILY.xattr.user.\xff\xfe");
        for bad in [&b"5 a=b\n"[..], b"30 a=b\n", b"x a=b\n", b"7 ab\nc\n", b"6 =bc\n"] {
            assert!(parse_pax(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_huge_extension_header_is_refused() {
        let mut data = header(b'x', "p", 64 << 20).to_vec();
        data.extend_from_slice(&[b'a'; 4096]);
        let err = read_all(&data).unwrap_err();
        assert!(err.to_string().contains("67108864 bytes"), "{err}");
        let mut data = header(b'L', "l", MAX_EXTENSION + 1).to_vec();
        data.extend_from_slice(&[0; 1024]);
        assert!(read_all(&data).is_err());
    }

    #[test]
    fn old_gnu_sparse_with_extended_headers() {
        // Ten regions of 512 bytes every 4096 bytes: 4 in the header, 6 in
        // one extended header.
        let mut h = tar::Header::new_gnu();
        h.set_path("sparse").unwrap();
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::GNUSparse);
        h.set_size(5120);
        let mut raw = *h.as_bytes();
        let field = |v: u64, out: &mut [u8]| {
            let s = format!("{v:011o}\0");
            out.copy_from_slice(s.as_bytes());
        };
        for i in 0..4 {
            field(i as u64 * 4096, &mut raw[386 + i * 24..398 + i * 24]);
            field(512, &mut raw[398 + i * 24..410 + i * 24]);
        }
        raw[482] = 1;
        field(50_000, &mut raw[483..495]);
        let mut h2 = tar::Header::from_byte_slice(&raw).clone();
        h2.set_cksum();
        let mut data = h2.as_bytes().to_vec();
        let mut ext = [0u8; BLOCK];
        for i in 0..6 {
            field((i as u64 + 4) * 4096, &mut ext[i * 24..i * 24 + 12]);
            field(512, &mut ext[i * 24 + 12..i * 24 + 24]);
        }
        data.extend_from_slice(&ext);
        let stored: Vec<u8> = (0..5120u32).map(|b| (b % 251) as u8 + 1).collect();
        data.extend_from_slice(&stored);
        data.extend(with_data(header(b'0', "after", 2), b"ok"));
        data.extend_from_slice(&[0; 1024]);
        let members = read_all(&data).unwrap();
        assert_eq!(members.len(), 2, "{members:?}");
        let (m, content) = &members[0];
        assert_eq!((m.kind, m.size, m.sparse), (b'0', 50_000, true));
        assert_eq!(content.len(), 50_000);
        for i in 0..10 {
            let at = i * 4096;
            assert_eq!(&content[at..at + 512], &stored[i * 512..i * 512 + 512]);
            assert!(content[at + 512..(at + 4096).min(50_000)].iter().all(|&b| b == 0));
        }
        assert!(content[40960..].iter().all(|&b| b == 0));
        assert_eq!(members[1].1, b"ok");
    }

    #[test]
    fn pax_sparse_formats() {
        let stored: Vec<u8> = [vec![b'H'; 512], b"WORLD".to_vec()].concat();
        let regions = [(1024u64, 512u64), (5000, 5)];
        let real = 8000u64;
        let expected = {
            let mut v = vec![0u8; real as usize];
            v[1024..1536].copy_from_slice(&stored[..512]);
            v[5000..5005].copy_from_slice(b"WORLD");
            v
        };
        let pax_member = |recs: Vec<Vec<u8>>, name: &str, data: &[u8]| {
            let recs = recs.concat();
            let mut out = with_data(header(b'x', "PaxHeaders/f", recs.len() as u64), &recs);
            out.extend(with_data(header(b'0', name, data.len() as u64), data));
            out.extend_from_slice(&[0; 1024]);
            out
        };
        let v00 = pax_member(
            vec![
                record(b"GNU.sparse.size", b"8000"),
                record(b"GNU.sparse.numblocks", b"2"),
                record(b"GNU.sparse.offset", b"1024"),
                record(b"GNU.sparse.numbytes", b"512"),
                record(b"GNU.sparse.offset", b"5000"),
                record(b"GNU.sparse.numbytes", b"5"),
            ],
            "f",
            &stored,
        );
        let v01 = pax_member(
            vec![
                record(b"GNU.sparse.size", b"8000"),
                record(b"GNU.sparse.numblocks", b"2"),
                record(b"GNU.sparse.name", b"f"),
                record(b"GNU.sparse.map", b"1024,512,5000,5"),
            ],
            "GNUSparseFile.1/f",
            &stored,
        );
        let mut map = format!("{}\n", regions.len());
        for (o, l) in regions {
            map += &format!("{o}\n{l}\n");
        }
        let mut data10 = map.into_bytes();
        data10.resize(BLOCK, 0);
        data10.extend_from_slice(&stored);
        let v10 = pax_member(
            vec![
                record(b"GNU.sparse.major", b"1"),
                record(b"GNU.sparse.minor", b"0"),
                record(b"GNU.sparse.name", b"f"),
                record(b"GNU.sparse.realsize", b"8000"),
            ],
            "GNUSparseFile.1/f",
            &data10,
        );
        for (version, data) in [("0.0", v00), ("0.1", v01), ("1.0", v10)] {
            let members = read_all(&data).unwrap_or_else(|e| panic!("{version}: {e}"));
            let (m, content) = &members[0];
            assert_eq!(m.path, b"f", "{version}");
            assert_eq!(m.size, real, "{version}");
            assert!(content == &expected, "{version}: content differs");
        }
        // Regions that do not fill whole blocks before the last: refused.
        let unaligned = pax_member(
            vec![
                record(b"GNU.sparse.size", b"8000"),
                record(b"GNU.sparse.map", b"100,5,5000,512"),
            ],
            "f",
            &stored,
        );
        let err = read_all(&unaligned).unwrap_err();
        assert!(err.to_string().contains("not whole 512-byte blocks"), "{err}");
    }

    #[test]
    fn bad_sparse_maps_are_refused() {
        let recs = [
            record(b"GNU.sparse.size", b"1000"),
            record(b"GNU.sparse.map", b"0,512,100,5"),
        ]
        .concat();
        let mut data = with_data(header(b'x', "p", recs.len() as u64), &recs);
        data.extend(with_data(header(b'0', "f", 517), &[1; 517]));
        assert!(read_all(&data).unwrap_err().to_string().contains("overlapping"));
        let recs = [
            record(b"GNU.sparse.size", b"1099511627777"),
            record(b"GNU.sparse.map", b"0,1"),
        ]
        .concat();
        let mut data = with_data(header(b'x', "p", recs.len() as u64), &recs);
        data.extend(with_data(header(b'0', "f", 1), b"0"));
        assert!(read_all(&data).is_err());
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number(b"00000001750\0"), Some(1000));
        assert_eq!(parse_number(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]), Some(256));
        assert_eq!(parse_number(b"           \0"), Some(0));
        assert_eq!(parse_number(b" 1750 \0"), Some(1000));
        assert_eq!(parse_number(b"notoctal!!!\0"), None);
        assert_eq!(parse_number(&[0xff; 8]), Some(-1));
    }
}
