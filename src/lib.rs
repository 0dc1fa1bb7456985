//! sealtree: versioned, signed, verified operating-system deployments built
//! on composefs images.

pub mod boot;
pub mod clock;
pub mod compose;
pub mod delta;
pub mod dumpfile;
pub mod erofs;
pub mod fsverity;
pub mod lockfile;
pub mod objects;
pub mod oci;
pub mod remote;
pub mod repo;
pub mod sign;
pub mod statcache;
pub mod steady;
pub mod sysroot;
pub mod tar_import;
pub mod tls;
pub mod tree;
pub mod uki;
pub mod url;
pub mod walk;
pub mod writeback;
