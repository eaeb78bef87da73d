#!/bin/sh
# Makes the `busybox` base image the example builds on, from this machine's busybox-static:
# nothing is pulled from a registry. Usage: busybox-base.sh [STRATA_BINARY]
set -eu
strata=${1:-strata}
busybox=$(command -v busybox)
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/root"
chmod 1777 "$rootfs/tmp"
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
tar -C "$rootfs" --numeric-owner -c . | "$strata" import --change 'CMD ["sh"]' - busybox
