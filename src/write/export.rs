//! `-extractto -`: the flattened root filesystem as one tar stream, as
//! undocker writes it, for `lxc-create -t local`, `machinectl import-tar`
//! or `tar -x`.
//!
//! The stream is written in one pass over the layers, in order: every
//! directory first (parents before children), then files without content
//! from a layer (symlinks, devices, fifos, empty files), then each layer's
//! surviving regular files as the layer is read, each inode's other names
//! following it as hard links, and last every directory again, deepest
//! first, so that extractors end with the directories' own mtimes. Nothing
//! is staged on disk; memory stays small.

use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;

use anyhow::{Context, Result};
use tar::{EntryType, Header};

use crate::fs::layer::{LayerBlob, Meta};
use crate::fs::node::Special;
use crate::fs::tree::{InodeKind, Plan, PlanInode, Tree};

/// Writes the merged tree of `layers` (lowest first) to `out` as a tar stream.
pub fn export_layers(layers: &[LayerBlob], out: impl Write) -> Result<()> {
    let changes = crate::fs::layer::read_all(layers)?;
    let plan = Tree::from_layers(&changes)?.plan();
    write_tar(&plan, layers, out)
}

fn write_tar(plan: &Plan, layers: &[LayerBlob], out: impl Write) -> Result<()> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Complete);
    let dir_entry = |tar: &mut tar::Builder<_>, dir: &crate::fs::tree::PlanDir| -> Result<()> {
        let path = if dir.path.is_empty() {
            b"./".to_vec()
        } else {
            [dir.path.as_slice(), b"/"].concat()
        };
        append(
            tar,
            &path,
            EntryType::Directory,
            &dir.meta,
            0,
            std::io::empty(),
            None,
        )
    };
    for dir in &plan.dirs {
        dir_entry(&mut tar, dir)?;
    }
    for inode in plan
        .inodes
        .iter()
        .filter(|i| !matches!(i.kind, InodeKind::File { source: Some(_), .. }))
    {
        append_inode(&mut tar, inode, std::io::empty())?;
    }
    for (&layer, wanted) in &plan.sources() {
        crate::fs::content::walk_wanted(&layers[layer], wanted, |i, _, reader| {
            append_inode(&mut tar, &plan.inodes[i], reader)
        })?;
    }
    // The files above changed their directories' mtimes: name every
    // directory once more, deepest first, so `tar -x` (which restores a
    // directory's metadata when it has passed its members) ends with the
    // image's values.
    for dir in plan.dirs.iter().rev().filter(|d| !d.implicit) {
        dir_entry(&mut tar, dir)?;
    }
    tar.finish().context("finishing the tar stream")?;
    Ok(())
}

fn append_inode<W: Write>(tar: &mut tar::Builder<W>, inode: &PlanInode, content: impl Read) -> Result<()> {
    let primary = &inode.paths[0];
    let meta = &inode.meta;
    match &inode.kind {
        InodeKind::File { size, .. } => append(tar, primary, EntryType::Regular, meta, *size, content, None)?,
        InodeKind::Special(Special::Symlink { target }) => append(
            tar,
            primary,
            EntryType::Symlink,
            meta,
            0,
            std::io::empty(),
            Some(target),
        )?,
        InodeKind::Special(Special::CharDev { major, minor }) => {
            let mut h = header(EntryType::Char, meta, 0);
            h.set_device_major(*major)?;
            h.set_device_minor(*minor)?;
            write_entry(tar, h, primary, meta, std::io::empty(), None)?;
        }
        InodeKind::Special(Special::BlockDev { major, minor }) => {
            let mut h = header(EntryType::Block, meta, 0);
            h.set_device_major(*major)?;
            h.set_device_minor(*minor)?;
            write_entry(tar, h, primary, meta, std::io::empty(), None)?;
        }
        InodeKind::Special(Special::Fifo) => {
            append(tar, primary, EntryType::Fifo, meta, 0, std::io::empty(), None)?
        }
        InodeKind::Dir => unreachable!("directories are not inodes of the plan"),
    }
    for link in &inode.paths[1..] {
        append(
            tar,
            link,
            EntryType::Link,
            meta,
            0,
            std::io::empty(),
            Some(primary),
        )?;
    }
    Ok(())
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &[u8],
    kind: EntryType,
    meta: &Meta,
    size: u64,
    content: impl Read,
    link: Option<&[u8]>,
) -> Result<()> {
    write_entry(tar, header(kind, meta, size), path, meta, content, link)
}

fn header(kind: EntryType, meta: &Meta, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode);
    h.set_uid(meta.uid.into());
    h.set_gid(meta.gid.into());
    h.set_mtime(meta.mtime.sec.max(0) as u64);
    h.set_size(size);
    h
}

/// PAX records carry what the header cannot: xattrs and sub-second mtimes.
fn write_entry<W: Write>(
    tar: &mut tar::Builder<W>,
    mut h: Header,
    path: &[u8],
    meta: &Meta,
    content: impl Read,
    link: Option<&[u8]>,
) -> Result<()> {
    // Keys as bytes: an xattr name need not be UTF-8.
    let mut pax: Vec<(Vec<u8>, Vec<u8>)> = meta
        .xattrs
        .iter()
        .map(|(k, v)| ([b"SCHILY.xattr.".as_slice(), k].concat(), v.to_vec()))
        .collect();
    if meta.mtime.nsec != 0 {
        pax.push((
            b"mtime".to_vec(),
            format!("{}.{:09}", meta.mtime.sec, meta.mtime.nsec).into_bytes(),
        ));
    }
    if !pax.is_empty() {
        let records: Vec<u8> = pax.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        let mut x = Header::new_ustar();
        x.set_path("././@PaxHeader")?;
        x.set_size(records.len() as u64);
        x.set_entry_type(EntryType::XHeader);
        x.set_mode(0o644);
        x.set_cksum();
        tar.append(&x, records.as_slice())?;
    }
    let os_path = std::ffi::OsStr::from_bytes(path);
    let shown = || String::from_utf8_lossy(path).into_owned();
    match link {
        Some(target) => tar
            .append_link(&mut h, os_path, std::ffi::OsStr::from_bytes(target))
            .with_context(|| format!("writing {}", shown())),
        None => tar
            .append_data(&mut h, os_path, content)
            .with_context(|| format!("writing {}", shown())),
    }
}

/// One PAX record: `"<len> <key>=<value>\n"`, `<len>` counting itself.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut out = format!("{len} ").into_bytes();
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn pax_records_count_their_own_length() {
        for (k, v) in [
            (&b"a"[..], &b"b"[..]),
            (b"SCHILY.xattr.user.\xff", &[b'x'; 95][..]),
        ] {
            let r = super::pax_record(k, v);
            let parsed = crate::fs::tarstream::parse_pax(&r).unwrap();
            assert_eq!(parsed, vec![(k.to_vec(), v.to_vec())]);
        }
    }
}
