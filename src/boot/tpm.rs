//! The epoch floor kept in a TPM 2.0 NV index, through tpm2-tools (the
//! initramfs carries them; see dracut/50sealtree).
//!
//! The index is a counter (TPM_NT_COUNTER) in the owner hierarchy; the
//! floor is its count minus one. A counter only ever goes up, and the TPM
//! remembers the highest count any counter has held, deletion and
//! TPM2_Clear included: a counter defined again starts above it. So no
//! write, deletion or clear, from any boot or any tool, lowers the floor.
//! Attributes:
//!
//! - authwrite with an empty authorization, and write_stclear: the
//!   initramfs counts up, then write-locks the index until the next TPM
//!   reset, before it hands over. The booted system cannot raise it.
//! - authread: anyone reads it.
//! - no_da: an empty authorization never counts towards lockout.
//!
//! Deleting an owner index needs the owner authorization (empty unless
//! the machine's owner set one). Whoever holds it can delete the index,
//! define it again unlocked and count it up at will: the floor rises as
//! far as they like (a denial of service that outlives a reinstall),
//! never falls.

use std::path::Path;
use std::process::{Command, Stdio};

const DEVICE: &str = "/dev/tpmrm0";
const DEVICE_TCTI: &str = "device:/dev/tpmrm0";

/// The floor's NV index ("SLT").
pub const FLOOR_INDEX: u32 = 0x0153_4c54;
const TPMA_AUTHWRITE: u32 = 1 << 2;
const TPM_NT_COUNTER: u32 = 1 << 4;
const TPMA_WRITELOCKED: u32 = 1 << 11;
const TPMA_WRITE_STCLEAR: u32 = 1 << 14;
const TPMA_AUTHREAD: u32 = 1 << 18;
const TPMA_NO_DA: u32 = 1 << 25;
const TPMA_WRITTEN: u32 = 1 << 29;
/// What the index is defined with (the TPM adds written and
/// writelocked as they happen).
pub const ATTRIBUTES: u32 =
    TPMA_AUTHWRITE | TPM_NT_COUNTER | TPMA_WRITE_STCLEAR | TPMA_AUTHREAD | TPMA_NO_DA;

#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    #[error("cannot run {tool}: {source} (tpm2-tools are needed for the epoch floor)")]
    Missing {
        tool: &'static str,
        source: std::io::Error,
    },
    #[error("{what}: {tool} failed: {message}")]
    Tool {
        what: String,
        tool: &'static str,
        message: String,
    },
    #[error("NV index {FLOOR_INDEX:#010x} is not an epoch floor: {0}")]
    Foreign(String),
}

/// The floor as the TPM holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Floor {
    pub epoch: u32,
    /// The counter itself (the floor plus one).
    pub count: u64,
    /// Write-locked until the next TPM reset.
    pub locked: bool,
}

/// A TPM reached through a TCTI (`device:/dev/tpmrm0`, `swtpm:port=N`).
#[derive(Debug, Clone)]
pub struct Tpm {
    tcti: String,
}

impl Tpm {
    pub fn new(tcti: impl Into<String>) -> Tpm {
        Tpm { tcti: tcti.into() }
    }

    /// For the booted system's commands: `$SEALTREE_TPM` (a TCTI), else
    /// the kernel's resource manager when the machine has a TPM 2.0.
    pub fn system() -> Option<Tpm> {
        if let Some(tcti) = std::env::var_os("SEALTREE_TPM") {
            return Some(Tpm::new(tcti.to_string_lossy()));
        }
        Path::new(DEVICE).exists().then(|| Tpm::new(DEVICE_TCTI))
    }

    /// For prepare-root: the resource manager, waited for (up to 10 s)
    /// when the firmware's ACPI tables announce a TPM 2.0 and its driver
    /// is a module still loading. Announced but absent is still a TPM:
    /// using it fails, and the boot with it, rather than booting without
    /// a floor.
    pub fn at_boot() -> Option<Tpm> {
        let announced = Path::new("/sys/firmware/acpi/tables/TPM2").exists();
        let start = std::time::Instant::now();
        while !Path::new(DEVICE).exists() {
            if !announced || start.elapsed() > std::time::Duration::from_secs(10) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        (announced || Path::new(DEVICE).exists()).then(|| Tpm::new(DEVICE_TCTI))
    }

    /// `tool` with `args` against this TPM; its standard output.
    fn run(&self, tool: &'static str, args: &[&str], what: &str) -> Result<Vec<u8>, TpmError> {
        let out = Command::new(tool)
            .args(args)
            .env("TPM2TOOLS_TCTI", &self.tcti)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| TpmError::Missing { tool, source })?;
        if !out.status.success() {
            // tpm2-tools print the TPM's answer among esys lines: the
            // decoded one where they give it, else their own words and
            // the response code.
            let stderr = String::from_utf8_lossy(&out.stderr);
            let errors: Vec<&str> = stderr
                .lines()
                .filter_map(|l| l.strip_prefix("ERROR: "))
                .collect();
            let code = stderr
                .split("ErrorCode (")
                .nth(1)
                .and_then(|r| r.split(')').next());
            let message = match errors.iter().find(|l| l.contains("tpm:")) {
                Some(decoded) => decoded.to_string(),
                None => match (errors.first(), code) {
                    (Some(words), Some(code)) => format!("{words} (TPM response {code})"),
                    (Some(words), None) => words.to_string(),
                    (None, _) => stderr.trim().to_string(),
                },
            };
            return Err(TpmError::Tool {
                what: what.to_string(),
                tool,
                message,
            });
        }
        Ok(out.stdout)
    }

    /// The index's public area as tpm2_nvreadpublic prints it, or None
    /// when the TPM has no such index (TPM_RC_HANDLE). Asked for by
    /// handle: a listing of all indexes is cut off at 254 entries.
    fn public(&self) -> Result<Option<String>, TpmError> {
        let index = index();
        match self.run(
            "tpm2_nvreadpublic",
            &[&index],
            "reading the floor's attributes",
        ) {
            Ok(out) => Ok(Some(String::from_utf8_lossy(&out).into_owned())),
            Err(TpmError::Tool { message, .. }) if no_such_index(&message) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The floor, or None when the index is not there (or was defined
    /// and never counted).
    pub fn read_floor(&self) -> Result<Option<Floor>, TpmError> {
        let Some(public) = self.public()? else {
            return Ok(None);
        };
        let index = index();
        let attributes = yaml_value(&public, "attributes", "value")
            .and_then(|v| u32::from_str_radix(v.trim_start_matches("0x"), 16).ok())
            .ok_or_else(|| {
                TpmError::Foreign(format!("tpm2_nvreadpublic gave no attributes: {public}"))
            })?;
        let defined = attributes & !(TPMA_WRITTEN | TPMA_WRITELOCKED);
        if defined != ATTRIBUTES {
            return Err(TpmError::Foreign(format!(
                "attributes {defined:#010x}, expected {ATTRIBUTES:#010x}"
            )));
        }
        if attributes & TPMA_WRITTEN == 0 {
            return Ok(None);
        }
        let data = self.run(
            "tpm2_nvread",
            &["-C", &index, "-s", "8", &index],
            "reading the floor",
        )?;
        let count: [u8; 8] = data
            .as_slice()
            .try_into()
            .map_err(|_| TpmError::Foreign(format!("read {} bytes, not 8", data.len())))?;
        let count = u64::from_be_bytes(count);
        let epoch = count
            .checked_sub(1)
            .and_then(|e| u32::try_from(e).ok())
            .ok_or_else(|| TpmError::Foreign(format!("count {count} is no floor")))?;
        Ok(Some(Floor {
            epoch,
            count,
            locked: attributes & TPMA_WRITELOCKED != 0,
        }))
    }

    /// Define the index if it is not there, and count it once: its first
    /// count is one above the highest any counter of this TPM has held,
    /// so a floor deleted and defined again is not lower than before.
    pub fn provision(&self) -> Result<Floor, TpmError> {
        if let Some(floor) = self.read_floor()? {
            return Ok(floor);
        }
        // Absent, or defined and never counted.
        if self.public()?.is_none() {
            let attributes = format!("{ATTRIBUTES:#x}");
            self.run(
                "tpm2_nvdefine",
                &[&index(), "-C", "o", "-s", "8", "-a", &attributes],
                "defining the floor (owner hierarchy)",
            )?;
        }
        self.increment("counting the new floor")?;
        self.read_floor()?
            .ok_or_else(|| TpmError::Foreign("still not written after its first count".to_string()))
    }

    fn increment(&self, what: &str) -> Result<(), TpmError> {
        let index = index();
        self.run("tpm2_nvincrement", &["-C", &index, &index], what)?;
        Ok(())
    }

    /// Count the floor up from `floor` to `epoch`.
    pub fn raise(&self, floor: &Floor, epoch: u32) -> Result<(), TpmError> {
        for n in floor.epoch..epoch {
            self.increment(&format!("raising the floor from {n} to {epoch}"))?;
        }
        Ok(())
    }

    /// Lock writes to the floor until the next TPM reset. False when
    /// there is no index to lock.
    pub fn lock(&self) -> Result<bool, TpmError> {
        let index = index();
        match self.run(
            "tpm2_nvwritelock",
            &["-C", &index, &index],
            "locking the floor",
        ) {
            Ok(_) => Ok(true),
            Err(TpmError::Tool { message, .. }) if no_such_index(&message) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The index as tpm2-tools take it.
fn index() -> String {
    format!("{FLOOR_INDEX:#x}")
}

/// tpm2-tools' words for TPM_RC_HANDLE on the index.
fn no_such_index(message: &str) -> bool {
    message.contains("(0x18B)") || message.contains("0x0000018b")
}

/// `key:` under `section:` in tpm2-tools' YAML output.
fn yaml_value<'a>(text: &'a str, section: &str, key: &str) -> Option<&'a str> {
    let mut lines = text.lines();
    lines.find(|l| l.trim() == format!("{section}:"))?;
    lines
        .take_while(|l| l.starts_with("    "))
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_what_tpm2_tools_show() {
        // tpm2_nvreadpublic (tpm2-tools 5.4): "authwrite|nt=0x1|
        // write_stclear|authread|no_da", 0x2044014.
        assert_eq!(ATTRIBUTES, 0x0204_4014);
        let text = "0x1534c54:\n  attributes:\n    friendly: authwrite\n    value: 0x22044814\n  size: 8\n";
        assert_eq!(yaml_value(text, "attributes", "value"), Some("0x22044814"));
    }
}
