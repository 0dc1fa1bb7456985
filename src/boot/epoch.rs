//! Anti-rollback at boot: a statement's security epoch against the floor
//! the TPM keeps (`boot::tpm`).
//!
//! prepare-root refuses a deployment whose epoch is below the floor. It
//! raises the floor to the deployment's epoch only when that deployment
//! was blessed on an earlier boot (the boot loader reports its entry
//! without a boot counter), so a release that fails its boots cannot
//! raise the floor and strand the machine. Whatever happened, the floor
//! is write-locked before the initramfs hands over (`Tpm::lock`, called
//! by the prepare-root command whatever the outcome).

use super::policy::EpochPolicy;
use super::tpm::Tpm;

/// The deployment being booted, as far as the floor cares.
#[derive(Debug, Clone)]
pub struct Booting<'a> {
    pub id: &'a str,
    pub commit: &'a str,
    pub epoch: u32,
    /// A sealed UKI's own epoch (`uki build --epoch`): its kernel and
    /// initramfs are held to the floor too.
    pub uki_epoch: Option<u32>,
    /// Its entry, as the loader started it, has no boot counter left.
    pub blessed: bool,
}

/// What was done with the floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No TPM (best-effort policy): the floor was not consulted.
    NoTpm,
    Checked {
        floor: u32,
        /// The floor was raised to this epoch.
        raised: Option<u32>,
        /// Why a higher epoch did not raise the floor.
        held: Option<&'static str>,
    },
}

/// Check `booting` against the floor, defining the index on first use and
/// raising it when allowed. Err is a refusal: boot must stop.
pub fn enforce(
    tpm: Option<&Tpm>,
    policy: EpochPolicy,
    booting: &Booting,
    mut warn: impl FnMut(&str),
) -> Result<Outcome, String> {
    let Some(tpm) = tpm else {
        return match policy {
            EpochPolicy::RequireTpm => Err(
                "this machine has no TPM (/dev/tpmrm0), and the policy is epoch = require-tpm"
                    .to_string(),
            ),
            EpochPolicy::BestEffort => {
                warn("WARNING: no TPM: the epoch floor is not kept on this machine (epoch = best-effort)");
                Ok(Outcome::NoTpm)
            }
        };
    };
    // A TPM that is there but fails is no reason to boot without the
    // floor: best-effort covers machines without one, not errors.
    let floor = tpm.provision().map_err(|e| e.to_string())?;
    if booting.epoch < floor.epoch {
        return Err(format!(
            "deployment {} (commit {}) is of epoch {}, below the floor {} kept in the TPM",
            booting.id, booting.commit, booting.epoch, floor.epoch
        ));
    }
    if let Some(uki) = booting.uki_epoch.filter(|&e| e < floor.epoch) {
        return Err(format!(
            "this UKI (kernel and initramfs) is of epoch {uki}, below the floor {} kept in the TPM",
            floor.epoch
        ));
    }
    let target = booting
        .uki_epoch
        .map_or(booting.epoch, |u| u.min(booting.epoch));
    let (mut raised, mut held) = (None, None);
    if target > floor.epoch {
        if !booting.blessed {
            held = Some("not blessed yet: it raises the floor on its first boot after a good one");
        } else if floor.locked {
            held = Some("the floor is already write-locked in this boot");
        } else {
            tpm.raise(&floor, target).map_err(|e| e.to_string())?;
            raised = Some(target);
        }
    }
    Ok(Outcome::Checked {
        floor: raised.unwrap_or(floor.epoch),
        raised,
        held,
    })
}
