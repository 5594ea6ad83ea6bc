# %post (chroot): runs inside the new system.
set -euo pipefail
# Everything that needs no running cluster: binaries, configuration, images imported into
# containerd, so the first boot pulls nothing.
{{trusted_keys}}
/var/lib/kbundle/kbundle install --bundle '/var/lib/kbundle/{{archive}}' --config /etc/kbundle/cluster.toml --node '{{node}}' --role '{{role}}' --phase prepare
# The first-boot bootstrap (kubeadm init or join), once: the installer writes
# /var/lib/kbundle/bootstrap.done when it has finished. Enabled by hand: no systemctl here.
cat > /etc/systemd/system/kbundle-bootstrap.service <<'UNIT'
{{bootstrap_unit}}
UNIT
chmod 0644 /etc/systemd/system/kbundle-bootstrap.service
mkdir -p /etc/systemd/system/multi-user.target.wants
ln -sfn /etc/systemd/system/kbundle-bootstrap.service /etc/systemd/system/multi-user.target.wants/kbundle-bootstrap.service
# Files written here get their SELinux labels from the installed policy.
if command -v restorecon >/dev/null 2>&1; then
    restorecon -R /etc/kbundle /var/lib/kbundle /etc/systemd/system/kbundle-bootstrap.service || echo "kbundle: warning: restorecon failed" >&2
fi
echo "kbundle: node {{node}} prepared; kbundle-bootstrap.service runs at first boot"
