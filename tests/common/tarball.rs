//! The one tar builder of the fixtures: [`tar`] of [`E`] entries, with
//! full control over every header field: raw (even hostile or non-UTF-8)
//! names, every entry type, owners, modes, PAX xattrs and sub-second
//! mtimes. The `tar` crate's builder refuses names with `..`, which is
//! exactly what malicious-layer tests need, so names are written into the
//! header fields directly (PAX `path` / `linkpath` records for long ones).

use tar::{EntryType, Header};

#[derive(Clone)]
pub struct E {
    name: Vec<u8>,
    kind: EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    data: Vec<u8>,
    link: Vec<u8>,
    dev: (u32, u32),
    pax: Vec<(String, Vec<u8>)>,
}

impl E {
    fn new(name: impl AsRef<[u8]>, kind: EntryType, mode: u32) -> E {
        E {
            name: name.as_ref().to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            data: Vec::new(),
            link: Vec::new(),
            dev: (0, 0),
            pax: Vec::new(),
        }
    }
    pub fn file(name: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> E {
        E {
            data: data.as_ref().to_vec(),
            ..E::new(name, EntryType::Regular, 0o644)
        }
    }
    pub fn dir(name: impl AsRef<[u8]>) -> E {
        E::new(name, EntryType::Directory, 0o755)
    }
    pub fn symlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> E {
        E {
            link: target.as_ref().to_vec(),
            ..E::new(name, EntryType::Symlink, 0o777)
        }
    }
    pub fn hardlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> E {
        E {
            link: target.as_ref().to_vec(),
            ..E::new(name, EntryType::Link, 0o644)
        }
    }
    pub fn chr(name: impl AsRef<[u8]>, major: u32, minor: u32) -> E {
        E {
            dev: (major, minor),
            ..E::new(name, EntryType::Char, 0o666)
        }
    }
    pub fn blk(name: impl AsRef<[u8]>, major: u32, minor: u32) -> E {
        E {
            dev: (major, minor),
            ..E::new(name, EntryType::Block, 0o660)
        }
    }
    pub fn fifo(name: impl AsRef<[u8]>) -> E {
        E::new(name, EntryType::Fifo, 0o644)
    }
    pub fn mode(mut self, mode: u32) -> E {
        self.mode = mode;
        self
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> E {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, secs: u64) -> E {
        self.mtime = secs;
        self
    }
    pub fn xattr(mut self, name: &str, value: impl AsRef<[u8]>) -> E {
        self.pax
            .push((format!("SCHILY.xattr.{name}"), value.as_ref().to_vec()));
        self
    }
    pub fn pax(mut self, key: &str, value: impl AsRef<[u8]>) -> E {
        self.pax.push((key.to_owned(), value.as_ref().to_vec()));
        self
    }
}

/// A tar stream of `entries`, in order.
pub fn tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut pax = e.pax.clone();
        let mut h = Header::new_ustar();
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        h.set_size(e.data.len() as u64);
        if matches!(e.kind, EntryType::Char | EntryType::Block) {
            h.set_device_major(e.dev.0).unwrap();
            h.set_device_minor(e.dev.1).unwrap();
        }
        {
            let raw = h.as_old_mut();
            raw.name.fill(0);
            let n = e.name.len().min(100);
            raw.name[..n].copy_from_slice(&e.name[..n]);
            raw.linkname.fill(0);
            let n = e.link.len().min(100);
            raw.linkname[..n].copy_from_slice(&e.link[..n]);
        }
        if e.name.len() > 100 {
            pax.push(("path".into(), e.name.clone()));
        }
        if e.link.len() > 100 {
            pax.push(("linkpath".into(), e.link.clone()));
        }
        if !pax.is_empty() {
            b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .unwrap();
        }
        h.set_cksum();
        b.append(&h, e.data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}
