//! The composefs dumpfile: a line of text per file describing a tree
//! (composefs-dump(5)), read into a [`crate::tree::Tree`] and written from one.

pub mod escape;
mod parse;
mod write;

use std::fmt;

pub use parse::parse;
pub use write::write;

/// A dumpfile that could not be read, with the line at fault.
#[derive(Debug)]
pub struct ParseError {
    /// 1-based line number, when one line is at fault.
    pub line: Option<usize>,
    pub message: String,
}

impl ParseError {
    fn at(line: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            line: Some(line),
            message: message.into(),
        }
    }

    fn whole(message: impl Into<String>) -> ParseError {
        ParseError {
            line: None,
            message: message.into(),
        }
    }

    fn io(line: usize, err: std::io::Error) -> ParseError {
        ParseError::at(line, format!("read failed: {err}"))
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ParseError {}
