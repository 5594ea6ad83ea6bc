# %post --nochroot: runs in the installer, the new system is mounted at /mnt/sysimage.
set -euo pipefail
archive='{{archive}}'
# `kbundle iso` puts the bundle under /kbundle/ on the media, which the installer mounts at
# /run/install/repo (the other paths cover other ways the same DVD can be attached).
media=''
for dir in /run/install/repo /run/install/sources/mount-*-cdrom /run/install/isodir; do
    if [ -f "$dir/kbundle/$archive" ] && [ -f "$dir/kbundle/kbundle" ] && [ -f "$dir/kbundle/cluster.toml" ]; then
        media="$dir/kbundle"
        break
    fi
done
if [ -z "$media" ]; then
    echo "kbundle: kbundle/$archive, kbundle/kbundle or kbundle/cluster.toml is missing from the install media (looked under /run/install/repo): make the ISO with 'kbundle iso'" >&2
    exit 1
fi
root=/mnt/sysimage
install -d -m 0755 "$root/var/lib/kbundle"
install -d -m 0700 "$root/etc/kbundle"
install -m 0644 "$media/$archive" "$root/var/lib/kbundle/$archive"
if [ -f "$media/$archive.sha256" ]; then
    install -m 0644 "$media/$archive.sha256" "$root/var/lib/kbundle/$archive.sha256"
fi
install -m 0755 "$media/kbundle" "$root/var/lib/kbundle/kbundle"
install -m 0600 "$media/cluster.toml" "$root/etc/kbundle/cluster.toml"
# The digests were recorded by `kbundle kickstart`: the archive's own sha256, the installer's
# sha256 from the bundle's bundle.json, and the sha256 of the cluster.toml it rendered from.
cd "$root"
if ! sha256sum --check --strict <<'SUMS'
{{archive_sha256}}  var/lib/kbundle/{{archive}}
{{installer_sha256}}  var/lib/kbundle/kbundle
{{config_sha256}}  etc/kbundle/cluster.toml
SUMS
then
    echo "kbundle: the copies above do not match the sha256 recorded in this kickstart: the media is damaged or was not made from the same bundle and cluster.toml" >&2
    exit 1
fi
echo "kbundle: $archive, the installer and cluster.toml copied and verified"
