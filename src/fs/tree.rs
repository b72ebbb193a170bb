//! The merged image tree: layers applied in order with the OCI image-spec
//! changeset rules. Every consumer (flat extraction, overlay layer
//! directories, tar export) reads its result, so the rules live here only.
//!
//! The rules:
//! - A layer's changes apply in stream order, as umoci and containerd apply
//!   them; its whiteouts (`.wh.NAME`) and opaque markers (`.wh..wh..opq`)
//!   remove only what lower layers put there, never the layer's own
//!   entries (nor the directories leading to them).
//! - An entry replaces whatever is at its path (a directory with its whole
//!   subtree), except a directory over a directory, which changes only the
//!   metadata and keeps the children. Duplicate entries: the last wins.
//! - Parent components resolve inside the tree the way `umoci` /
//!   `filepath-securejoin` resolve them on disk: symlinks are followed
//!   (absolute targets from the image root), `..` stops at the root, and
//!   missing parents are created as plain directories. Nothing can resolve
//!   outside the root, because the tree has no outside.
//! - A hard link names the inode its target has at that moment; it keeps the
//!   content even when a later layer removes or replaces the target.
//!
//! Nodes are names; inodes carry what is on disk (kind, metadata, and for
//! regular files the layer entry holding the content). Several nodes may
//! share an inode (hard links).

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{bail, Result};

use crate::fs::layer::{self, Change, Entry, Kind, Meta};
use crate::fs::node::Special;

pub type NodeId = usize;
pub type InodeId = usize;

/// Where a regular file's content is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// Entry `entry` of layer `layer`.
    Layer { layer: usize, entry: u32 },
    /// The blocks of inode `ino` of an flist.
    Flist { ino: i64 },
    /// The file at the inode's first path below a scanned directory.
    Disk,
}

/// What an inode is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InodeKind {
    /// `source` is `None` for empty files.
    File {
        size: u64,
        source: Option<Source>,
    },
    Dir,
    Special(Special),
}

/// What is on disk for one or more names (hard links). A tree of a
/// million entries holds a million of these and of [`Node`]s: both are
/// kept small.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Inode {
    kind: InodeKind,
    /// Its metadata, in the tree's `metas` (entries next to each other
    /// with the same metadata, as a layer's files mostly are, share one).
    meta: u32,
    /// A directory created only because something was put inside it: no
    /// layer gave it metadata (mode 0755, root-owned, no fixed mtime).
    implicit: bool,
}

/// A name in the tree. Its own name is the key it has in its parent's
/// children (kept once).
#[derive(Debug, Clone)]
struct Node {
    /// Ids as u32: a million-entry tree holds a million nodes.
    parent: u32,
    inode: u32,
    /// Unlinked from its parent (replaced, whited out, pruned): gone,
    /// with its subtree.
    detached: bool,
    /// Children by name; `None` until it has any (boxed: a pointer for
    /// the many nodes that never have any, not an empty map's 24 bytes).
    #[allow(clippy::box_collection)]
    children: Option<Box<BTreeMap<Box<[u8]>, u32>>>,
}

/// The merged tree of the layers applied so far.
#[derive(Debug, Clone)]
pub struct Tree {
    nodes: Vec<Node>,
    inodes: Vec<Inode>,
    metas: Vec<Meta>,
}

/// Links followed in one resolution before giving up (Linux's MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;

const ROOT: NodeId = 0;

/// A node or inode id as a node stores it.
fn id32(id: usize) -> u32 {
    u32::try_from(id).expect("fewer than 2^32 entries in a tree")
}

/// What one layer changed, in the terms overlayfs needs for that layer's
/// own directory: nodes it created or changed, lower entries it deleted,
/// directories whose lower content it hid.
#[derive(Debug, Default)]
pub struct LayerDiff {
    /// Nodes from this id on were created by the layer.
    first_node: NodeId,
    /// Lower nodes the layer changed (the ones it created are not listed:
    /// a million of them held 28 MB).
    touched: HashSet<NodeId>,
    whiteouts: HashSet<(NodeId, Box<[u8]>)>,
    opaque: HashSet<NodeId>,
}

/// A name of the tree, as [`Tree::for_each_name`] gives it.
pub struct TreeEntry<'a> {
    /// Its inode (shared by a file's hard links).
    pub inode: InodeId,
    pub kind: &'a InodeKind,
    pub meta: &'a Meta,
}

/// A tree flattened for writing: directories parents-first, then every
/// other inode once with all its names.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    pub dirs: Vec<PlanDir>,
    pub inodes: Vec<PlanInode>,
    /// Overlay whiteouts (character devices 0/0) to create.
    pub whiteouts: Vec<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct PlanDir {
    /// Relative path; empty for the root.
    pub path: Vec<u8>,
    pub meta: Meta,
    pub implicit: bool,
    /// Mark opaque for overlayfs (`trusted.overlay.opaque=y`).
    pub opaque: bool,
}

#[derive(Debug, Clone)]
pub struct PlanInode {
    /// Every name of the inode, in tree order; the first gets created, the
    /// others are hard links to it.
    pub paths: Vec<Vec<u8>>,
    pub kind: InodeKind,
    pub meta: Meta,
}

impl LayerDiff {
    /// Records that the layer changed or created `node`.
    fn touch(&mut self, node: NodeId) {
        if node < self.first_node {
            self.touched.insert(node);
        }
    }

    /// Every node the layer changed or created (not all of them reachable).
    fn changed(&self, nodes: usize) -> impl Iterator<Item = NodeId> + '_ {
        self.touched.iter().copied().chain(self.first_node..nodes)
    }
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

impl Tree {
    /// An empty root directory.
    pub fn new() -> Self {
        let mut tree = Tree {
            nodes: vec![Node {
                parent: ROOT as u32,
                inode: 0,
                detached: false,
                children: None,
            }],
            inodes: Vec::new(),
            metas: Vec::new(),
        };
        let root = tree.implicit_dir();
        tree.inodes.push(root);
        tree
    }

    /// Applies all `layers` (their changes, lowest first).
    pub fn from_layers(layers: &[Vec<Change>]) -> Result<Self> {
        let mut tree = Tree::new();
        // About one node and one inode an entry: sized once, not doubled.
        let entries: usize = layers.iter().map(Vec::len).sum();
        tree.nodes.reserve(entries);
        tree.inodes.reserve(entries);
        for (i, changes) in layers.iter().enumerate() {
            tree.apply_layer(i, changes)?;
        }
        Ok(tree)
    }

    /// Applies every layer's change log, lowest first, each log dropped
    /// once applied (what a pack holds).
    pub fn from_logs(logs: Vec<crate::fs::layer::ChangeLog>) -> Result<Self> {
        let mut tree = Tree::new();
        let entries: usize = logs.iter().map(|l| l.len()).sum();
        tree.nodes.reserve(entries);
        tree.inodes.reserve(entries);
        for (i, log) in logs.into_iter().enumerate() {
            let mut diff = tree.new_diff();
            for change in log.into_changes() {
                tree.apply_change(i, &change?, &mut diff)?;
            }
        }
        Ok(tree)
    }

    fn new_diff(&self) -> LayerDiff {
        LayerDiff {
            first_node: self.nodes.len(),
            ..LayerDiff::default()
        }
    }

    /// Applies layer number `layer` on top of the tree: its changes in
    /// stream order, as umoci and containerd apply them; whiteouts and
    /// opaque markers remove only what lower layers put there.
    pub fn apply_layer(&mut self, layer: usize, changes: &[Change]) -> Result<LayerDiff> {
        let mut diff = self.new_diff();
        for change in changes {
            self.apply_change(layer, change, &mut diff)?;
        }
        Ok(diff)
    }

    fn apply_change(&mut self, layer: usize, change: &Change, diff: &mut LayerDiff) -> Result<()> {
        {
            match change {
                Change::Whiteout { path } => self.whiteout(path, diff)?,
                Change::Opaque { dir } => self.opaque(dir, diff)?,
                Change::Add(entry) => self.add(layer, entry, diff).map_err(|e| {
                    e.context(format!(
                        "layer {layer}: entry {:?}",
                        String::from_utf8_lossy(&entry.path)
                    ))
                })?,
            }
        }
        Ok(())
    }

    fn is_dir(&self, node: NodeId) -> bool {
        self.inodes[self.nodes[node].inode as InodeId].kind == InodeKind::Dir
    }

    fn child(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        self.nodes[dir].children.as_ref()?.get(name).map(|&n| n as NodeId)
    }

    /// The children of `dir`, by name.
    fn children(&self, dir: NodeId) -> impl DoubleEndedIterator<Item = (&Box<[u8]>, NodeId)> {
        (self.nodes[dir].children.iter())
            .flat_map(|c| c.iter())
            .map(|(name, &n)| (name, n as NodeId))
    }

    /// The metadata of inode `inode`.
    fn meta_of(&self, inode: InodeId) -> &Meta {
        &self.metas[self.inodes[inode].meta as usize]
    }

    /// The place of `meta` in `metas`: one of the last few if equal, or a
    /// new one.
    fn intern(&mut self, meta: &Meta) -> u32 {
        let recent = self.metas.len().saturating_sub(4);
        let i = match self.metas[recent..].iter().rposition(|m| m == meta) {
            Some(i) => recent + i,
            None => {
                self.metas.push(meta.clone());
                self.metas.len() - 1
            }
        };
        u32::try_from(i).expect("fewer than 2^32 entries")
    }

    fn implicit_dir(&mut self) -> Inode {
        Inode {
            kind: InodeKind::Dir,
            meta: self.intern(&Meta {
                mode: 0o755,
                ..Meta::default()
            }),
            implicit: true,
        }
    }

    /// Resolves `path` as a directory, following every symlink on the way.
    /// With `create`, missing directories are made; without, `None` when
    /// something is missing.
    fn walk(&mut self, path: &[u8], create: bool) -> Result<Option<NodeId>> {
        let mut pending: Vec<Box<[u8]>> = layer::components(path).rev().map(Box::from).collect();
        let mut cur = ROOT;
        let mut links = 0;
        while let Some(part) = pending.pop() {
            if &*part == b".." {
                cur = self.nodes[cur].parent as NodeId;
                continue;
            }
            let Some(next) = self.child(cur, &part) else {
                if !create {
                    return Ok(None);
                }
                let dir = self.implicit_dir();
                cur = self.insert(cur, &part, dir);
                continue;
            };
            match &self.inodes[self.nodes[next].inode as InodeId].kind {
                InodeKind::Dir => cur = next,
                InodeKind::Special(Special::Symlink { target }) => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        bail!("too many levels of symbolic links");
                    }
                    if target.first() == Some(&b'/') {
                        cur = ROOT;
                    }
                    pending.extend(layer::components(target).rev().map(Box::from));
                }
                _ => bail!(
                    "{:?} is not a directory",
                    String::from_utf8_lossy(&self.path_of(next))
                ),
            }
        }
        Ok(Some(cur))
    }

    /// The directory holding `path` and the final name, parents resolved.
    fn parent_of<'p>(&mut self, path: &'p [u8], create: bool) -> Result<Option<(NodeId, &'p [u8])>> {
        let (parent, name) = layer::split_last(path);
        Ok(self.walk(parent, create)?.map(|dir| (dir, name)))
    }

    fn whiteout(&mut self, path: &[u8], diff: &mut LayerDiff) -> Result<()> {
        let Some((dir, name)) = self.parent_of(path, false)? else {
            return Ok(());
        };
        if name == b".." || name.is_empty() {
            bail!("invalid whiteout {:?}", String::from_utf8_lossy(path));
        }
        match self.child(dir, name) {
            // Put there by this layer: whiteouts apply to lower layers only.
            Some(node) if node >= diff.first_node => {}
            // A lower directory this layer changed or put something in:
            // its lower content goes, this layer's stays, as if the
            // whiteout had come first.
            Some(node) if self.is_dir(node) && self.prune_lower(node, diff) => {
                diff.opaque.insert(node);
            }
            Some(_) => {
                self.detach(dir, name);
                diff.whiteouts.insert((dir, name.into()));
            }
            None => {
                diff.whiteouts.insert((dir, name.into()));
            }
        }
        Ok(())
    }

    fn opaque(&mut self, dir: &[u8], diff: &mut LayerDiff) -> Result<()> {
        let Some(node) = self.walk(dir, false)? else {
            return Ok(());
        };
        self.prune_lower(node, diff);
        diff.opaque.insert(node);
        Ok(())
    }

    /// Removes from below `top` what lower layers put there, keeping what
    /// this layer created or changed and the directories leading to it.
    /// Returns whether anything this layer made was kept (or `top` itself
    /// was changed by the layer).
    fn prune_lower(&mut self, top: NodeId, diff: &LayerDiff) -> bool {
        let mine = |n: NodeId| n >= diff.first_node || diff.touched.contains(&n);
        // Every node under `top` that is this layer's, with its ancestors.
        let mut keep: HashSet<NodeId> = HashSet::new();
        let candidates = diff.changed(self.nodes.len());
        for node in candidates.collect::<Vec<_>>() {
            let mut chain = vec![node];
            let mut cur = node;
            let under = loop {
                if cur == top {
                    break true;
                }
                let parent = self.nodes[cur].parent as NodeId;
                // Detached nodes (and the root) lead nowhere.
                if cur == ROOT || self.nodes[cur].detached {
                    break false;
                }
                cur = parent;
                chain.push(cur);
            };
            if under && node != top {
                keep.extend(chain);
            }
        }
        let kept_any = !keep.is_empty() || mine(top);
        let mut stack = vec![top];
        while let Some(dir) = stack.pop() {
            let children: Vec<(Box<[u8]>, NodeId)> =
                self.children(dir).map(|(k, v)| (k.clone(), v)).collect();
            for (name, child) in children {
                if !keep.contains(&child) {
                    self.detach(dir, &name);
                } else if child < diff.first_node && self.is_dir(child) {
                    stack.push(child);
                }
            }
        }
        kept_any
    }

    fn add(&mut self, layer: usize, entry: &Entry, diff: &mut LayerDiff) -> Result<()> {
        let (parent, name) = layer::split_last(&entry.path);
        if name.is_empty() || name == b".." {
            // The root itself (`./`) or `dir/..`: only a directory can name it.
            if entry.kind != Kind::Dir {
                bail!("a non-directory entry cannot name a directory path");
            }
            let node = self.walk(&entry.path, true)?.expect("created");
            self.set_dir_meta(node, &entry.meta);
            diff.touch(node);
            return Ok(());
        }
        let dir = self.walk(parent, true)?.expect("created");
        let existing = self.child(dir, name);
        let inode = match &entry.kind {
            Kind::Dir => {
                if let Some(node) = existing.filter(|&n| self.is_dir(n)) {
                    self.set_dir_meta(node, &entry.meta);
                    diff.touch(node);
                    return Ok(());
                }
                self.new_inode(InodeKind::Dir, entry)
            }
            Kind::Hardlink { target } => {
                let (tdir, tname) = self
                    .parent_of(target, false)?
                    .filter(|(_, n)| !n.is_empty() && *n != b"..")
                    .ok_or_else(|| {
                        anyhow::anyhow!("hard link to missing {:?}", String::from_utf8_lossy(target))
                    })?;
                let target_node = self.child(tdir, tname).ok_or_else(|| {
                    anyhow::anyhow!("hard link to missing {:?}", String::from_utf8_lossy(target))
                })?;
                if self.is_dir(target_node) {
                    bail!("hard link to a directory");
                }
                if existing == Some(target_node) {
                    return Ok(());
                }
                self.nodes[target_node].inode as InodeId
            }
            Kind::File { size, .. } => {
                let source = (*size > 0).then_some(Source::Layer {
                    layer,
                    entry: entry.index,
                });
                self.new_inode(InodeKind::File { size: *size, source }, entry)
            }
            Kind::Special(special) => self.new_inode(InodeKind::Special(special.clone()), entry),
        };
        if existing.is_some() {
            self.detach(dir, name);
        }
        let node = self.insert_node(dir, name, inode);
        diff.touch(node);
        // A directory re-created where this layer whited one out must hide
        // the lower directory's content in overlayfs.
        if diff.whiteouts.remove(&(dir, Box::from(name))) && self.is_dir(node) {
            diff.opaque.insert(node);
        }
        Ok(())
    }

    fn new_inode(&mut self, kind: InodeKind, entry: &Entry) -> InodeId {
        let meta = self.intern(&entry.meta);
        self.inodes.push(Inode {
            kind,
            meta,
            implicit: false,
        });
        self.inodes.len() - 1
    }

    fn set_dir_meta(&mut self, node: NodeId, meta: &Meta) {
        let meta = self.intern(meta);
        let inode = &mut self.inodes[self.nodes[node].inode as InodeId];
        inode.meta = meta;
        inode.implicit = false;
    }

    fn insert(&mut self, dir: NodeId, name: &[u8], inode: Inode) -> NodeId {
        self.inodes.push(inode);
        let id = self.inodes.len() - 1;
        self.insert_node(dir, name, id)
    }

    fn insert_node(&mut self, dir: NodeId, name: &[u8], inode: InodeId) -> NodeId {
        self.nodes.push(Node {
            parent: id32(dir),
            inode: id32(inode),
            detached: false,
            children: None,
        });
        let id = self.nodes.len() - 1;
        let children = self.nodes[dir].children.get_or_insert_with(Default::default);
        if let Some(old) = children.insert(name.into(), id32(id)) {
            self.nodes[old as NodeId].detached = true;
        }
        id
    }

    /// Unlinks the child `name` of `dir` (and so its subtree).
    fn detach(&mut self, dir: NodeId, name: &[u8]) {
        if let Some(node) = self.nodes[dir].children.as_mut().and_then(|c| c.remove(name)) {
            self.nodes[node as NodeId].detached = true;
        }
    }

    /// The path of `node`, for messages: each name is found in its
    /// parent's children (nodes keep no name of their own).
    fn path_of(&self, mut node: NodeId) -> Vec<u8> {
        let mut parts = Vec::new();
        while node != ROOT {
            let parent = self.nodes[node].parent as NodeId;
            match self.children(parent).find(|&(_, n)| n == node) {
                Some((name, _)) => parts.push(name),
                None => break,
            }
            node = parent;
        }
        let mut out = Vec::new();
        for p in parts.iter().rev() {
            if !out.is_empty() {
                out.push(b'/');
            }
            out.extend_from_slice(p);
        }
        out
    }

    /// Every reachable node, parents first, children in name order.
    fn reachable(&self) -> Vec<(NodeId, Vec<u8>)> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut stack = vec![(ROOT, Vec::new())];
        while let Some((node, path)) = stack.pop() {
            for (name, child) in self.children(node).rev() {
                let mut p = path.clone();
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(name);
                stack.push((child, p));
            }
            out.push((node, path));
        }
        out
    }

    /// How many inodes the tree has made (an upper bound of the ids
    /// [`Self::for_each_name`] gives).
    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    /// Every name in the tree, parents before their children (depth
    /// first, names in order), for a writer that numbers what it writes:
    /// `f(parent, name, entry)` gets the number `f` returned for the
    /// parent (0 for the root, whose name is empty) and returns this
    /// name's. Holds no path: the names are the tree's own.
    pub fn for_each_name(&self, mut f: impl FnMut(u64, &[u8], TreeEntry) -> Result<u64>) -> Result<()> {
        let mut stack: Vec<(NodeId, u64, &[u8])> = vec![(ROOT, 0, &[])];
        while let Some((node, parent, name)) = stack.pop() {
            let inode = self.nodes[node].inode as InodeId;
            let entry = TreeEntry {
                inode,
                kind: &self.inodes[inode].kind,
                meta: self.meta_of(inode),
            };
            let number = f(parent, name, entry)?;
            for (child_name, child) in self.children(node).rev() {
                stack.push((child, number, child_name));
            }
        }
        Ok(())
    }

    /// The whole tree, for writing.
    pub fn plan(&self) -> Plan {
        self.plan_of(self.reachable(), &HashSet::new())
    }

    /// What overlayfs needs in the directory of the layer `diff` came from:
    /// the nodes it touched (with every ancestor, carrying its merged
    /// metadata), whiteouts, opaque markers, and the other names of any
    /// inode it linked to (copied up, so hard links stay one inode).
    pub fn plan_diff(&self, diff: &LayerDiff) -> Plan {
        let all = self.reachable();
        let mut by_inode: HashMap<InodeId, Vec<NodeId>> = HashMap::new();
        for (node, _) in &all {
            if !self.is_dir(*node) {
                by_inode
                    .entry(self.nodes[*node].inode as InodeId)
                    .or_default()
                    .push(*node);
            }
        }
        let mut wanted: HashSet<NodeId> = HashSet::new();
        let want = |mut node: NodeId, wanted: &mut HashSet<NodeId>| {
            while wanted.insert(node) && node != ROOT {
                node = self.nodes[node].parent as NodeId;
            }
        };
        // The root always: the layer's directory carries the image root's
        // metadata, which `-mount` gives the mount's root.
        want(ROOT, &mut wanted);
        let reachable: HashSet<NodeId> = all.iter().map(|(n, _)| *n).collect();
        for node in diff.changed(self.nodes.len()).filter(|n| reachable.contains(n)) {
            want(node, &mut wanted);
            if let Some(names) = by_inode.get(&(self.nodes[node].inode as InodeId)) {
                for &other in names {
                    want(other, &mut wanted);
                }
            }
        }
        for (dir, _) in &diff.whiteouts {
            if reachable.contains(dir) {
                want(*dir, &mut wanted);
            }
        }
        for dir in &diff.opaque {
            if reachable.contains(dir) {
                want(*dir, &mut wanted);
            }
        }
        // The paths of the directories whiteouts are in (a node's path is
        // costly to find on its own).
        let whiteout_dirs: HashSet<NodeId> = diff.whiteouts.iter().map(|(dir, _)| *dir).collect();
        let dir_paths: HashMap<NodeId, Vec<u8>> = (all.iter())
            .filter(|(n, _)| whiteout_dirs.contains(n))
            .cloned()
            .collect();
        let selected: Vec<(NodeId, Vec<u8>)> = all.into_iter().filter(|(n, _)| wanted.contains(n)).collect();
        let mut plan = self.plan_of(selected, &diff.opaque);
        let mut whiteouts: Vec<Vec<u8>> = diff
            .whiteouts
            .iter()
            .filter(|(dir, name)| reachable.contains(dir) && self.child(*dir, name).is_none())
            .map(|(dir, name)| {
                let mut p = dir_paths[dir].clone();
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(name);
                p
            })
            .collect();
        whiteouts.sort();
        plan.whiteouts = whiteouts;
        plan
    }

    fn plan_of(&self, nodes: Vec<(NodeId, Vec<u8>)>, opaque: &HashSet<NodeId>) -> Plan {
        // Sized before they are filled (a doubling vector of a million
        // entries holds twice what it needs while it moves).
        let dirs = nodes.iter().filter(|(n, _)| self.is_dir(*n)).count();
        let mut plan = Plan {
            dirs: Vec::with_capacity(dirs),
            inodes: Vec::with_capacity(nodes.len() - dirs),
            whiteouts: Vec::new(),
        };
        // Each inode's place in the plan (usize::MAX: not yet placed).
        let mut index_of: Vec<usize> = vec![usize::MAX; self.inodes.len()];
        for (node, path) in nodes {
            let inode_id = self.nodes[node].inode as InodeId;
            let inode = &self.inodes[inode_id];
            if inode.kind == InodeKind::Dir {
                plan.dirs.push(PlanDir {
                    path,
                    meta: self.meta_of(inode_id).clone(),
                    implicit: inode.implicit,
                    opaque: opaque.contains(&node),
                });
                continue;
            }
            match index_of[inode_id] {
                usize::MAX => {
                    index_of[inode_id] = plan.inodes.len();
                    plan.inodes.push(PlanInode {
                        paths: vec![path],
                        kind: inode.kind.clone(),
                        meta: self.meta_of(inode_id).clone(),
                    });
                }
                i => plan.inodes[i].paths.push(path),
            }
        }
        plan
    }
}

impl Plan {
    /// Regular-file content each layer must provide: entry index → inode.
    pub fn sources(&self) -> BTreeMap<usize, HashMap<u32, usize>> {
        let mut out: BTreeMap<usize, HashMap<u32, usize>> = BTreeMap::new();
        for (i, inode) in self.inodes.iter().enumerate() {
            if let InodeKind::File {
                source: Some(Source::Layer { layer, entry }),
                ..
            } = inode.kind
            {
                out.entry(layer).or_default().insert(entry, i);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::layer::Timestamp;

    fn meta(mode: u32) -> Meta {
        Meta {
            mode,
            mtime: Timestamp { sec: 5, nsec: 0 },
            ..Meta::default()
        }
    }

    fn add(index: u32, path: &str, kind: Kind) -> Change {
        Change::Add(Entry {
            index,
            path: path.as_bytes().into(),
            kind,
            meta: meta(0o644),
        })
    }
    fn file(i: u32, path: &str, size: u64) -> Change {
        add(i, path, Kind::File { size, sparse: false })
    }
    fn dir(i: u32, path: &str) -> Change {
        add(i, path, Kind::Dir)
    }
    fn symlink(i: u32, path: &str, target: &str) -> Change {
        add(
            i,
            path,
            Kind::Special(Special::Symlink {
                target: target.as_bytes().into(),
            }),
        )
    }
    fn hardlink(i: u32, path: &str, target: &str) -> Change {
        add(
            i,
            path,
            Kind::Hardlink {
                target: target.as_bytes().into(),
            },
        )
    }
    fn wh(path: &str) -> Change {
        Change::Whiteout {
            path: path.as_bytes().into(),
        }
    }
    fn opq(path: &str) -> Change {
        Change::Opaque {
            dir: path.as_bytes().into(),
        }
    }

    /// `path kind[@layer.entry]` lines, for readable assertions.
    fn listing(tree: &Tree) -> Vec<String> {
        let plan = tree.plan();
        let mut out: Vec<String> = plan
            .dirs
            .iter()
            .map(|d| format!("{}/", String::from_utf8_lossy(&d.path)))
            .collect();
        for inode in &plan.inodes {
            let what = match &inode.kind {
                InodeKind::File {
                    source: Some(Source::Layer { layer, entry }),
                    ..
                } => format!("file@{layer}.{entry}"),
                InodeKind::File { source: None, .. } => "empty".into(),
                InodeKind::Special(Special::Symlink { target }) => {
                    format!("-> {}", String::from_utf8_lossy(target))
                }
                other => format!("{other:?}"),
            };
            let names: Vec<String> = inode
                .paths
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            out.push(format!("{} {what}", names.join("=")));
        }
        out.sort();
        out
    }

    #[test]
    fn whiteouts_opaque_and_recreation() {
        let tree = Tree::from_layers(&[
            vec![
                dir(0, "a"),
                file(1, "a/x", 1),
                file(2, "a/y", 1),
                dir(3, "b"),
                file(4, "b/z", 1),
                file(5, "c", 1),
            ],
            // Opaque after a same-layer child: the child stays, lower ones go.
            vec![file(0, "b/new", 1), opq("b"), wh("a/x"), wh("c"), file(3, "c", 1)],
        ])
        .unwrap();
        assert_eq!(
            listing(&tree),
            ["/", "a/", "a/y file@0.2", "b/", "b/new file@1.0", "c file@1.3"]
        );
    }

    #[test]
    fn type_changes_and_directory_merges() {
        let tree = Tree::from_layers(&[
            vec![
                dir(0, "d"),
                file(1, "d/keep", 1),
                dir(2, "gone"),
                file(3, "gone/f", 1),
                file(4, "f", 1),
            ],
            vec![
                dir(0, "d"),
                file(1, "gone", 1),
                dir(2, "f"),
                file(3, "f/inside", 1),
            ],
        ])
        .unwrap();
        assert_eq!(
            listing(&tree),
            [
                "/",
                "d/",
                "d/keep file@0.1",
                "f/",
                "f/inside file@1.3",
                "gone file@1.1"
            ]
        );
        let d = tree.plan().dirs.into_iter().find(|d| d.path == b"d").unwrap();
        assert!(!d.implicit);
    }

    #[test]
    fn duplicates_last_wins_and_parents_are_implicit() {
        let tree = Tree::from_layers(&[vec![
            file(0, "p/q/f", 1),
            file(1, "p/q/f", 2),
            symlink(2, "p/q/f", "t"),
        ]])
        .unwrap();
        assert_eq!(listing(&tree), ["/", "p/", "p/q/", "p/q/f -> t"]);
        assert!(tree.plan().dirs.iter().all(|d| d.implicit));
    }

    #[test]
    fn symlinked_parents_resolve_inside_the_root() {
        let tree = Tree::from_layers(&[
            vec![
                dir(0, "usr"),
                dir(1, "usr/bin"),
                symlink(2, "bin", "usr/bin"),
                symlink(3, "abs", "/usr"),
            ],
            vec![
                file(0, "bin/sh", 1),
                file(1, "abs/lib/x", 1),
                file(2, "../../escape", 1),
                symlink(3, "up", "../../../.."),
            ],
            vec![file(0, "up/etc/passwd", 1), file(1, "bin/../y", 1)],
        ])
        .unwrap();
        assert_eq!(
            listing(&tree),
            [
                "/",
                "abs -> /usr",
                "bin -> usr/bin",
                "escape file@1.2",
                "etc/",
                "etc/passwd file@2.0",
                "up -> ../../../..",
                "usr/",
                "usr/bin/",
                "usr/bin/sh file@1.0",
                "usr/lib/",
                "usr/lib/x file@1.1",
                "usr/y file@2.1",
            ]
        );
    }

    #[test]
    fn symlink_loops_and_files_as_parents_are_errors() {
        let err = Tree::from_layers(&[vec![
            symlink(0, "a", "b"),
            symlink(1, "b", "a"),
            file(2, "a/x", 1),
        ]])
        .unwrap_err();
        assert!(format!("{err:#}").contains("too many levels"), "{err:#}");
        let err = Tree::from_layers(&[vec![file(0, "f", 1), file(1, "f/x", 1)]]).unwrap_err();
        assert!(format!("{err:#}").contains("not a directory"), "{err:#}");
    }

    #[test]
    fn hardlinks_keep_content_after_the_target_goes() {
        let tree = Tree::from_layers(&[
            vec![file(0, "orig", 4), hardlink(1, "same-layer", "orig")],
            vec![hardlink(0, "upper", "orig")],
            vec![wh("orig"), file(1, "same-layer", 9)],
        ])
        .unwrap();
        assert_eq!(listing(&tree), ["/", "same-layer file@2.1", "upper file@0.0"]);
        let err = Tree::from_layers(&[vec![hardlink(0, "x", "missing")]]).unwrap_err();
        assert!(format!("{err:#}").contains("missing"), "{err:#}");
    }

    #[test]
    fn a_layer_applies_in_stream_order_and_whiteouts_spare_its_own_entries() {
        let tree = Tree::from_layers(&[
            vec![
                file(0, "x1", 4),
                dir(1, "d"),
                file(2, "d/old", 1),
                dir(3, "e"),
                file(4, "e/old", 1),
            ],
            vec![
                // A hard link to a lower file, then that file whited out:
                // the link keeps its content (umoci, containerd).
                hardlink(0, "x1-link", "x1"),
                wh("x1"),
                // This layer's own entry survives its whiteout.
                file(3, "mine", 2),
                wh("mine"),
                // A lower directory this layer put something in: the lower
                // content goes, this layer's stays.
                file(5, "d/new", 1),
                wh("d"),
                // And the same with an opaque marker after a child.
                file(7, "e/new", 1),
                opq("e"),
            ],
        ])
        .unwrap();
        assert_eq!(
            listing(&tree),
            [
                "/",
                "d/",
                "d/new file@1.5",
                "e/",
                "e/new file@1.7",
                "mine file@1.3",
                "x1-link file@0.0",
            ]
        );
    }

    #[test]
    fn overlay_diffs() {
        let mut tree = Tree::new();
        tree.apply_layer(
            0,
            &[
                dir(0, "a"),
                file(1, "a/x", 1),
                file(2, "a/y", 1),
                dir(3, "b"),
                file(4, "b/old", 1),
                file(5, "h", 1),
            ],
        )
        .unwrap();
        let diff = tree
            .apply_layer(
                1,
                &[
                    wh("a/x"),
                    wh("b"),
                    dir(0, "b"),
                    file(1, "b/new", 1),
                    hardlink(2, "h2", "h"),
                    file(3, "z/deep", 1),
                ],
            )
            .unwrap();
        let plan = tree.plan_diff(&diff);
        let dirs: Vec<(String, bool)> = plan
            .dirs
            .iter()
            .map(|d| (String::from_utf8_lossy(&d.path).into_owned(), d.opaque))
            .collect();
        assert_eq!(
            dirs,
            [
                ("".into(), false),
                ("a".into(), false),
                ("b".into(), true),
                ("z".into(), false)
            ]
        );
        assert_eq!(plan.whiteouts, [b"a/x".to_vec()]);
        let names: Vec<Vec<String>> = plan
            .inodes
            .iter()
            .map(|i| {
                i.paths
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect()
            })
            .collect();
        assert_eq!(
            names,
            [
                vec!["b/new".to_owned()],
                vec!["h".to_owned(), "h2".to_owned()],
                vec!["z/deep".to_owned()]
            ]
        );
    }
}
