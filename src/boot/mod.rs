//! Boot-time verification, run in the initramfs: check the deployment's
//! signature and image digest, then mount the image as the new root.

pub mod epoch;
mod loopdev;
mod policy;
mod prepare_root;
pub mod tpm;

pub use policy::{EpochPolicy, EtcPolicy, Policy, SignaturePolicy, VerityPolicy};
pub use prepare_root::{prepare_root, PrepareError, PrepareOptions, Prepared};
