//! `flmount flist ls | inspect | tag | store`: reading and editing an
//! flist's entries, tags and routes.

use std::path::Path;

use anyhow::{Context, Result};

use crate::flist::format::{Flist, RouteRow};
use crate::fs::node::Special;
use crate::fs::tree::InodeKind;
use crate::progress::human_bytes;
use crate::store;

/// `flmount flist ls F`: every entry, sorted by path.
pub fn ls(flist: &Path, json: bool) -> Result<()> {
    let (plan, _) = Flist::open(flist)?.plan()?;
    if json {
        return ls_json(&plan);
    }
    // (path, type and mode, owner and size, what follows the path)
    let mut lines: Vec<(Vec<u8>, String, String)> = Vec::new();
    for d in &plan.dirs {
        let m = &d.meta;
        let meta = format!("d{:04o} {:>5} {:>5} {:>12}", m.mode, m.uid, m.gid, 0);
        lines.push((d.path.clone(), meta, String::new()));
    }
    for inode in &plan.inodes {
        let (t, size, extra) = match &inode.kind {
            InodeKind::File { size, .. } => ('-', *size, String::new()),
            InodeKind::Special(Special::Symlink { target }) => {
                ('l', 0, format!(" -> {}", String::from_utf8_lossy(target)))
            }
            InodeKind::Special(Special::CharDev { major, minor }) => ('c', 0, format!(" ({major},{minor})")),
            InodeKind::Special(Special::BlockDev { major, minor }) => ('b', 0, format!(" ({major},{minor})")),
            InodeKind::Special(Special::Fifo) => ('p', 0, String::new()),
            InodeKind::Dir => ('d', 0, String::new()),
        };
        let m = &inode.meta;
        let meta = format!("{t}{:04o} {:>5} {:>5} {size:>12}", m.mode, m.uid, m.gid);
        for p in &inode.paths {
            lines.push((p.clone(), meta.clone(), extra.clone()));
        }
    }
    lines.sort();
    let mut out = std::io::stdout().lock();
    for (path, meta, extra) in lines {
        writeln_or_pipe(
            &mut out,
            &format!("{meta} /{}{extra}", String::from_utf8_lossy(&path)),
        )?;
    }
    Ok(())
}

/// `flist ls -json`: one array of entries, sorted by path.
fn ls_json(plan: &crate::fs::tree::Plan) -> Result<()> {
    use serde_json::json;
    let mut rows: Vec<(Vec<u8>, serde_json::Value)> = Vec::new();
    let entry = |path: &[u8], kind: &str, m: &crate::fs::layer::Meta, extra: serde_json::Value| {
        let mut v = json!({
            "path": format!("/{}", String::from_utf8_lossy(path)),
            "type": kind, "mode": m.mode, "uid": m.uid, "gid": m.gid,
        });
        if let (Some(v), serde_json::Value::Object(extra)) = (v.as_object_mut(), extra) {
            v.extend(extra);
        }
        v
    };
    for d in &plan.dirs {
        rows.push((d.path.clone(), entry(&d.path, "dir", &d.meta, json!({}))));
    }
    for inode in &plan.inodes {
        let (kind, extra) = match &inode.kind {
            InodeKind::File { size, .. } => ("file", json!({ "size": size })),
            InodeKind::Special(Special::Symlink { target }) => {
                ("symlink", json!({ "target": String::from_utf8_lossy(target) }))
            }
            InodeKind::Special(Special::CharDev { major, minor }) => {
                ("char", json!({ "major": major, "minor": minor }))
            }
            InodeKind::Special(Special::BlockDev { major, minor }) => {
                ("block", json!({ "major": major, "minor": minor }))
            }
            InodeKind::Special(Special::Fifo) => ("fifo", json!({})),
            InodeKind::Dir => ("dir", json!({})),
        };
        for p in &inode.paths {
            rows.push((p.clone(), entry(p, kind, &inode.meta, extra.clone())));
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let list: Vec<_> = rows.into_iter().map(|(_, v)| v).collect();
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &list)?;
    writeln_or_pipe(&mut out, "")
}

/// `flmount flist inspect F`: counts, routes and tags.
pub fn inspect(flist: &Path, json: bool) -> Result<()> {
    {
        let fl = Flist::open(flist)?;
        let (plan, blocks) = fl.plan()?;
        let files = plan
            .inodes
            .iter()
            .filter(|i| matches!(i.kind, InodeKind::File { .. }))
            .count();
        let bytes: u64 = plan
            .inodes
            .iter()
            .map(|i| {
                if let InodeKind::File { size, .. } = i.kind {
                    size
                } else {
                    0
                }
            })
            .sum();
        // The distinct chunks the flist names (as pack counts them).
        let chunks = blocks
            .values()
            .flatten()
            .map(|c| c.id)
            .collect::<std::collections::HashSet<_>>()
            .len();
        if json {
            let routes = routes_json(&fl)?;
            let tags: std::collections::BTreeMap<_, _> = fl.tags()?.into_iter().collect();
            println!(
                "{}",
                serde_json::json!({
                    "flist": flist, "directories": plan.dirs.len(), "files": files, "bytes": bytes,
                    "other": plan.inodes.len() - files, "chunks": chunks, "routes": routes, "tags": tags,
                })
            );
            return Ok(());
        }
        println!("flist:       {}", flist.display());
        println!("directories: {}", plan.dirs.len());
        println!("files:       {files} ({})", human_bytes(bytes));
        println!("other:       {}", plan.inodes.len() - files);
        println!("chunks:      {chunks}");
        println!("routes:");
        for r in fl.routes()? {
            println!("  {:02x}-{:02x} {}", r.start, r.end, r.url);
        }
        println!("tags:");
        for (k, v) in fl.tags()? {
            println!("  {k} = {v}");
        }
    }
    Ok(())
}

/// `flmount flist tag F [KEY=VALUE...] [-delete KEY...]`
pub fn tag(flist: &Path, set: &[String], delete: &[String], json: bool) -> Result<()> {
    {
        let fl = if set.is_empty() && delete.is_empty() {
            Flist::open(flist)?
        } else {
            Flist::open_rw(flist)?
        };
        for kv in set {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("expected KEY=VALUE, got {kv:?}"))?;
            fl.set_tag(k, v)?;
        }
        for k in delete {
            fl.delete_tag(k)?;
        }
        if json {
            let tags: std::collections::BTreeMap<_, _> = fl.tags()?.into_iter().collect();
            println!("{}", serde_json::json!(tags));
            return Ok(());
        }
        for (k, v) in fl.tags()? {
            println!("{k}={v}");
        }
    }
    Ok(())
}

/// `flmount flist store F [ROUTE...]`
pub fn store(flist: &Path, routes: &[String], json: bool) -> Result<()> {
    {
        let fl = if routes.is_empty() {
            Flist::open(flist)?
        } else {
            Flist::open_rw(flist)?
        };
        if !routes.is_empty() {
            let mut rows = Vec::new();
            for arg in routes {
                let spec = store::StoreSpec::parse(arg)?;
                rows.push(RouteRow {
                    start: spec.start,
                    end: spec.end,
                    url: spec.url.public(),
                });
            }
            fl.replace_routes(&rows)?;
        }
        if json {
            let routes = routes_json(&fl)?;
            println!("{}", serde_json::json!(routes));
            return Ok(());
        }
        for r in fl.routes()? {
            println!("{:02x}-{:02x}={}", r.start, r.end, r.url);
        }
    }
    Ok(())
}

/// An flist's routes as JSON objects (`start`, `end`, `url`).
fn routes_json(fl: &Flist) -> Result<Vec<serde_json::Value>> {
    Ok(fl
        .routes()?
        .into_iter()
        .map(|r| serde_json::json!({"start": r.start, "end": r.end, "url": r.url}))
        .collect())
}

/// Writes a line; a closed pipe (`| head`) ends the listing quietly.
fn writeln_or_pipe(out: &mut impl std::io::Write, line: &str) -> Result<()> {
    match writeln!(out, "{line}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        r => Ok(r?),
    }
}
