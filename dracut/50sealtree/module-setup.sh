#!/bin/bash
# dracut module: sealtree prepare-root in a systemd initramfs, with the
# trusted keys and policy of the building machine's /etc/sealtree/
# (trusted.d/*.pub, prepare-root.conf). Install this directory (symlinks
# followed) as /usr/lib/dracut/modules.d/50sealtree. The binary is
# $SEALTREE_BINARY, else sealtree on dracut's PATH.

sealtree_binary() {
    echo "${SEALTREE_BINARY:-$(command -v sealtree)}"
}

check() {
    [ -x "$(sealtree_binary)" ] || {
        dinfo "dracut module 'sealtree' needs the sealtree binary (set SEALTREE_BINARY)"
        return 1
    }
    # Only when asked for (dracut -a sealtree or add_dracutmodules+=).
    return 255
}

depends() {
    echo systemd
}

installkernel() {
    instmods erofs overlay loop
    # The epoch floor's TPM (built into most distribution kernels).
    hostonly='' instmods -o tpm_tis tpm_crb
}

install() {
    inst_binary "$(sealtree_binary)" /usr/bin/sealtree
    inst_multiple -o modprobe
    # The epoch floor (boot/tpm.rs): tpm2-tools and the TCTI they load
    # at run time. Without them a machine with a TPM refuses to boot (the
    # floor cannot be checked); one without a TPM boots as its policy says.
    inst_multiple -o tpm2_nvreadpublic tpm2_nvread tpm2_nvdefine tpm2_nvincrement \
        tpm2_nvwritelock
    inst_libdir_file -o "libtss2-tcti-device.so*"
    inst_simple "$moddir/sealtree-prepare-root.service" \
        "$systemdsystemunitdir/sealtree-prepare-root.service"
    inst_simple "$moddir/sealtree-enable-verity.service" \
        "$systemdsystemunitdir/sealtree-enable-verity.service"
    $SYSTEMCTL -q --root "$initdir" add-wants initrd-root-fs.target sealtree-prepare-root.service
    $SYSTEMCTL -q --root "$initdir" add-wants initrd-root-fs.target sealtree-enable-verity.service
    # Keys and policy, built in: the root filesystem is not trusted yet.
    inst_dir /etc/sealtree/trusted.d
    local key
    for key in /etc/sealtree/trusted.d/*; do
        [ -f "$key" ] && inst_simple "$key"
    done
    [ -f /etc/sealtree/prepare-root.conf ] && inst_simple /etc/sealtree/prepare-root.conf
    return 0
}
