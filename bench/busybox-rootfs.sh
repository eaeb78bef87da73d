#!/bin/sh
# Fills DIR with the benchmarks' base image: busybox-static with a link per applet, root in
# /etc/passwd and /etc/group (the layout ../shared/bench/README.md describes). Usage: busybox-rootfs.sh DIR
set -eu
dir=$1
mkdir -p "$dir/bin" "$dir/etc" "$dir/tmp" "$dir/root"
cp /bin/busybox "$dir/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -s busybox "$dir/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$dir/etc/passwd"
echo 'root:x:0:' >"$dir/etc/group"
