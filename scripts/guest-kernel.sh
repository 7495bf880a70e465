#!/bin/sh
# Prepares a guest kernel for the dm-crypt tests: Debian's linux-image
# (downloaded, unpacked, never installed), its uncompressed vmlinux, and an
# initramfs with static busybox and the modules for loop devices, dm-crypt,
# ext4, virtio-9p, virtio-net and the kernel RBD client (libceph, rbd). The
# init script brings up loopback and QEMU's user network (10.0.2.15, the
# host's loopback at 10.0.2.2), mounts the host's /usr and the repo over 9p
# and runs /run-in-guest.sh from the repo share.
#
# usage: scripts/guest-kernel.sh OUT_DIR    (idempotent; reuses OUT_DIR)
set -eu
out=$(realpath -m "$1")
mkdir -p "$out"
# Bump when the initramfs changes, so prepared kernels are rebuilt.
version=3
if [ -s "$out/vmlinux" ] && [ -s "$out/initrd.cpio.gz" ] && [ "$(cat "$out/version" 2>/dev/null)" = "$version" ]; then
    exit 0
fi
command -v qemu-system-x86_64 >/dev/null || { echo "qemu-system-x86_64 missing (apt-get install qemu-system-x86)" >&2; exit 3; }
[ -x /bin/busybox ] || { echo "static busybox missing (apt-get install busybox-static)" >&2; exit 3; }

cd "$out"
find_pkg() {
    apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | cut -d' ' -f1 | sort -V | tail -1
}
pkg=$(find_pkg)
if [ -z "$pkg" ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    pkg=$(find_pkg)
fi
[ -n "$pkg" ] || { echo "no linux-image-6.1.0-*-amd64 package known to apt" >&2; exit 3; }
if ! ls "$pkg"_*.deb >/dev/null 2>&1; then
    apt-get download "$pkg" >/dev/null 2>&1 || { apt-get update -qq && apt-get download "$pkg"; }
fi
rm -rf pkg && mkdir pkg && dpkg -x "$pkg"_*.deb pkg
kver=$(ls pkg/lib/modules | head -1)
mods=pkg/lib/modules/$kver

# vmlinux: the xz stream inside the bzImage (boots ~2x faster under TCG).
python3 - "pkg/boot/vmlinuz-$kver" vmlinux <<'PY'
import lzma, sys
data = open(sys.argv[1], 'rb').read()
off = data.find(b'\xfd7zXZ\x00')
assert off > 0, 'no xz stream in the bzImage'
d = lzma.LZMADecompressor()
out = d.decompress(data[off:])
assert out[:4] == b'\x7fELF', 'not an ELF kernel'
open(sys.argv[2], 'wb').write(out)
PY

/bin/busybox depmod -b pkg "$kver"

# Modules wanted, and their dependencies, in load order.
python3 - "$mods" > modules.list <<'PY'
import os, sys
root = sys.argv[1]
deps = {}
for line in open(os.path.join(root, 'modules.dep')):
    k, _, v = line.partition(':')
    deps[k.strip()] = v.split()
byname = {os.path.basename(k).split('.ko')[0].replace('-', '_'): k for k in deps}
want = ['loop', 'dm_mod', 'dm_crypt', 'xts', 'ecb', 'cbc', 'aes_generic', 'aesni_intel',
        'crc32c_generic', 'crc32c_intel', 'ext4', 'virtio_pci', 'virtio_ring', 'virtio',
        'netfs', '9pnet', '9pnet_virtio', '9p', 'af_alg', 'algif_skcipher', 'algif_hash',
        'sha256_generic', 'xxhash_generic', 'virtio_net',
        'libcrc32c', 'dns_resolver', 'libceph', 'rbd']
order, seen = [], set()
def add(path):
    if path in seen: return
    seen.add(path)
    for d in deps.get(path, []): add(d)
    order.append(path)
for w in want:
    if w in byname: add(byname[w])
print('\n'.join(order))
PY

rm -rf root && mkdir -p root/bin root/lib/modules root/proc root/sys root/dev root/tmp root/run root/usr root/work
cp /bin/busybox root/bin/busybox
while read -r m; do cp "$mods/$m" root/lib/modules/; echo "$(basename "$m")"; done < modules.list > root/lib/modules/order
cat > root/init <<'INIT'
#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
$B mount -t tmpfs tmp /tmp
$B mount -t tmpfs run /run
for m in $($B cat /lib/modules/order); do $B insmod /lib/modules/$m 2>/dev/null; done
$B ip link set lo up
if $B ip link set eth0 up 2>/dev/null; then
    $B ip addr add 10.0.2.15/24 dev eth0
    $B ip route add default via 10.0.2.2
fi
$B mount -t 9p -o trans=virtio,version=9p2000.L,cache=loose,ro usr /usr
# Host-built dynamic binaries find their loader and libraries under /usr.
$B ln -s usr/lib64 /lib64
for d in usr/lib/x86_64-linux-gnu; do $B mkdir -p /lib/x86_64-linux-gnu; done
$B mount --bind /usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu
REPO=$($B cat /proc/cmdline | $B tr ' ' '\n' | $B sed -n 's/^kmshost.repo=//p')
$B mkdir -p "$REPO"
$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576 repo "$REPO"
export PATH=/usr/sbin:/usr/bin:/bin HOME=/tmp DM_DISABLE_UDEV=1
$B sh "$REPO/target/guest/run-in-guest.sh"
$B sync
$B poweroff -f
INIT
chmod +x root/init
(cd root && find . | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -1) > initrd.cpio.gz
rm -rf pkg root
echo "$version" > version
echo "guest kernel $kver ready in $out"
