//! What a filesystem node is beyond a regular file or a directory: the
//! kinds every stage shares (a layer's tar entry, a plan's inode, a FUSE
//! node), with what each carries. Files and directories carry what their
//! stage needs (content sources, chunk ranges, entries), so each stage's
//! own kind enum has those two and this one.

/// A symlink, a device node or a FIFO.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Special {
    Symlink { target: Box<[u8]> },
    CharDev { major: u32, minor: u32 },
    BlockDev { major: u32, minor: u32 },
    Fifo,
}

impl Special {
    /// The file type bits of `st_mode` (`S_IFLNK`, `S_IFCHR`, ...).
    pub fn type_bits(&self) -> u32 {
        match self {
            Special::Symlink { .. } => libc::S_IFLNK,
            Special::CharDev { .. } => libc::S_IFCHR,
            Special::BlockDev { .. } => libc::S_IFBLK,
            Special::Fifo => libc::S_IFIFO,
        }
    }

    /// The device number as the FUSE protocol carries it (the kernel's
    /// `new_encode_dev`: 12 bits of major, 20 of minor); 0 for the others.
    pub fn fuse_rdev(&self) -> u32 {
        match *self {
            Special::CharDev { major, minor } | Special::BlockDev { major, minor } => {
                (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & 0xfff00) << 12)
            }
            _ => 0,
        }
    }

    /// The device number of a device node (0 for the others).
    pub fn rdev(&self) -> u64 {
        match *self {
            Special::CharDev { major, minor } | Special::BlockDev { major, minor } => {
                libc::makedev(major, minor)
            }
            _ => 0,
        }
    }
}
