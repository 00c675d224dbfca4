#!/bin/sh
# own_mount_ns.sh OWN_DIR COMMAND [ARG...]: runs COMMAND (exec: same pid) in the
# mount namespace `unshare --mount` just made for it, after lazily detaching the
# copies unshare made of nacre mounts (fuse.nacre) outside OWN_DIR. Only nacre's:
# / or the source tree may be FUSE themselves elsewhere (fuse-overlayfs, sshfs).
#
# Why: where / is private (here; systemd makes it shared on a node), a new mount
# namespace holds private copies of every mount there was. A copy of another
# test's nacre mount outlives that test's unmount and keeps its superblock, so
# that nacre daemon never sees the unmount and runs on until this namespace ends
# (passthrough_test and write_test failed "still running 10 s after unmount" next
# to csi_e2e_test). Copies in a shared peer group are left alone:
# an unmount there would propagate back to the original.
[ $# -ge 2 ] || { echo "usage: own_mount_ns.sh OWN_DIR COMMAND [ARG...]" >&2; exit 2; }
own=${1%/}/
shift
awk -v own="$own" '/ - fuse\.nacre / && !/ shared:[0-9]/ && index($5 "/", own) != 1 { print $5 }' \
  /proc/self/mountinfo | while read -r m; do umount -l "$m" 2>/dev/null; done
exec "$@"
