//! The epoch floor as the booted system sees it (`admin epoch`, and the
//! floor `admin status`, `deploy` and `upgrade` judge commits by).

use anyhow::Result;

use sealtree::boot::tpm::{Floor, Tpm, FLOOR_INDEX};

/// The machine's floor: None without a TPM or before the initramfs first
/// defined the index. A TPM that cannot be read is said, not fatal:
/// prepare-root is what enforces the floor.
pub fn machine_floor() -> Option<Floor> {
    let tpm = Tpm::system()?;
    match tpm.read_floor() {
        Ok(floor) => floor,
        Err(e) => {
            eprintln!("sealtree: the epoch floor cannot be read: {e}");
            None
        }
    }
}

/// `admin epoch`.
pub fn print_epoch() -> Result<()> {
    let Some(tpm) = Tpm::system() else {
        anyhow::bail!("no TPM (/dev/tpmrm0): this machine keeps no epoch floor");
    };
    match tpm.read_floor()? {
        None => {
            println!("0");
            println!("NV index {FLOOR_INDEX:#010x} not counted yet: prepare-root defines it at the next boot");
        }
        Some(floor) => {
            println!("{}", floor.epoch);
            println!(
                "NV counter {FLOOR_INDEX:#010x} at {}, {}",
                floor.count,
                if floor.locked {
                    "write-locked until the next reboot"
                } else {
                    "NOT write-locked: this boot did not go through prepare-root"
                }
            );
        }
    }
    Ok(())
}
