//! Composefs images: EROFS filesystems whose regular files point, through
//! overlayfs metacopy and redirect xattrs, at objects named by digest.

pub mod format;
pub mod overlay;
mod reader;
mod writer;

pub use reader::{image_version, read_image};
pub use writer::{plan_image, write_image, Image, ImageOptions, ImagePlan};

/// A tree that cannot be written as an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("format version {0} is not supported (the highest is {max})", max = format::MAX_FORMAT_VERSION)]
    UnsupportedVersion(u32),
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl ImageError {
    fn invalid(path: &str, message: &str) -> ImageError {
        ImageError::Invalid {
            path: path.to_string(),
            message: message.to_string(),
        }
    }
}

/// Bytes that are not a composefs image this reader understands.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0} bytes is too small for a composefs image")]
    TooSmall(usize),
    #[error("no composefs header (wrong magic number)")]
    NotComposefs,
    #[error("composefs header version {0} is not supported")]
    UnsupportedHeader(u32),
    #[error("no EROFS superblock (wrong magic number)")]
    NotErofs,
    #[error("corrupt image at offset {offset}: {what}")]
    Corrupt { offset: u64, what: String },
}

impl ReadError {
    fn corrupt(offset: u64, what: &str) -> ReadError {
        ReadError::Corrupt {
            offset,
            what: what.to_string(),
        }
    }
}
