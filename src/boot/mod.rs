//! Boot-time verification, run in the initramfs: check the deployment's
//! signature and image digest, then mount the image as the new root.

mod loopdev;
mod policy;
mod prepare_root;

pub use policy::{EtcPolicy, Policy, SignaturePolicy, VerityPolicy};
pub use prepare_root::{prepare_root, PrepareError, PrepareOptions, Prepared};
