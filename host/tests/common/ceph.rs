//! A real Ceph cluster for tests (Debian's Ceph 16 packages, installed by
//! scripts/bootstrap.sh with peers): one monitor and one memstore OSD with
//! cephx, bound to 127.0.0.2 (so the QEMU guest can reach it too), started
//! once per test binary ([`shared`]) by a thread that lives as long as the
//! process; the daemons die with it (`PR_SET_PDEATHSIG`). The steps and
//! traps are in `../shared/PEERS.md`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Where the cluster listens.
pub const IP: &str = "127.0.0.2";

/// Whether the Ceph daemons and tools are installed.
pub fn ceph_installed() -> bool {
    [
        "ceph-mon",
        "ceph-osd",
        "ceph",
        "rbd",
        "monmaptool",
        "ceph-authtool",
    ]
    .iter()
    .all(|t| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).exists()))
    })
}

/// Returns whether Ceph is here, or: panics if peers are required
/// (`KMSHOST_REQUIRE_PEERS=1`, as scripts/test.sh sets), else says loudly
/// that the test is skipped.
pub fn require_ceph(test: &str) -> bool {
    if ceph_installed() {
        return true;
    }
    if std::env::var_os("KMSHOST_REQUIRE_PEERS").is_some() {
        panic!("{test}: Ceph is required but not installed (run scripts/test.sh)");
    }
    eprintln!("SKIPPED {test}: Ceph not installed (scripts/test.sh installs it)");
    false
}

/// A running one-mon, one-OSD cluster with pool `rbd`.
pub struct Ceph {
    /// Its directory (config, keyrings, logs, daemon data).
    pub dir: PathBuf,
    /// The monitor's v1 address, `127.0.0.2:P` (what ceph-csi's cluster
    /// config lists).
    pub mon_addr: String,
    /// The cluster's fsid.
    pub fsid: String,
}

/// The binary's one cluster (started on first use).
pub fn shared() -> Arc<Ceph> {
    static CLUSTER: OnceLock<Arc<Ceph>> = OnceLock::new();
    CLUSTER.get_or_init(|| Arc::new(start())).clone()
}

/// A base port with `n` free ports above it on [`IP`].
fn free_ports(n: u16) -> u16 {
    for _ in 0..100 {
        let base = 20000 + (rand::random::<u16>() % 30000);
        if (base..base + n).all(|p| std::net::TcpListener::bind((IP, p)).is_ok()) {
            return base;
        }
    }
    panic!("no {n} free ports on {IP}");
}

/// The cluster's ceph.conf. The monitor's store is tiny, so it runs down
/// to 1 % free disk: Ceph's default (5 %) stops the monitor, and every
/// command then times out, on a build machine whose disk targets filled.
fn conf(dir: &Path, fsid: &str, port: u16) -> String {
    let d = dir.display();
    format!(
        "[global]\nfsid = {fsid}\nmon host = [v2:{IP}:{v2},v1:{IP}:{port}]\n\
         mon initial members = a\npublic addr = {IP}\n\
         auth cluster required = cephx\nauth service required = cephx\n\
         auth client required = cephx\nkeyring = {d}/admin.keyring\n\
         run dir = {d}/run\nlog file = {d}/$name.log\npid file = {d}/$name.pid\n\
         ms bind port min = {lo}\nms bind port max = {hi}\n\
         osd pool default size = 1\nosd pool default min size = 1\n\
         osd pool default pg num = 8\nosd pool default pgp num = 8\n\
         osd pool default pg autoscale mode = off\nosd crush chooseleaf type = 0\n\
         mon allow pool size one = true\nmon allow pool delete = true\n\
         mon data avail crit = 1\nmon data avail warn = 2\n\
         [mon]\nmon data = {d}/mon\nadmin socket = {d}/run/mon.asok\n\
         [osd]\nosd data = {d}/osd\nosd objectstore = memstore\n\
         memstore device bytes = 1073741824\nadmin socket = {d}/run/osd.asok\n\
         keyring = {d}/osd/keyring\n",
        v2 = port + 1,
        lo = port + 2,
        hi = port + 9,
    )
}

/// Runs `program args` to completion, panicking with its output if it
/// fails.
fn must(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a daemon in the foreground as the child of a thread that lives as
/// long as it (so `PR_SET_PDEATHSIG` kills it with the test process);
/// returns its pid.
fn daemon(program: &str, args: Vec<String>, log: PathBuf) -> u32 {
    let program = program.to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(&program);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{program}: {e}"));
        tx.send(child.id()).unwrap();
        let _ = child.wait();
    });
    rx.recv().unwrap()
}

fn start() -> Ceph {
    let dir = tempfile::tempdir().unwrap().keep();
    for d in ["run", "mon", "osd"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let fsid = uuid();
    let port = free_ports(10);
    let c = Ceph {
        mon_addr: format!("{IP}:{port}"),
        dir,
        fsid,
    };
    std::fs::write(c.conf_path(), conf(&c.dir, &c.fsid, port)).unwrap();
    c.make_mon(port);
    c.make_osd();
    c.admin(&["osd", "pool", "create", "rbd", "8", "8"]);
    c.admin(&["osd", "set-require-min-compat-client", "mimic"]);
    c.rbd_admin(&["pool", "init", "rbd"]);
    c
}

fn uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

impl Ceph {
    /// The admin config file.
    pub fn conf_path(&self) -> PathBuf {
        self.dir.join("ceph.conf")
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn make_mon(&self, port: u16) {
        let (mon, admin, map) = (
            self.path("mon.keyring"),
            self.path("admin.keyring"),
            self.path("monmap"),
        );
        must(
            "ceph-authtool",
            &[
                "--create-keyring",
                &mon,
                "--gen-key",
                "-n",
                "mon.",
                "--cap",
                "mon",
                "allow *",
            ],
        );
        must(
            "ceph-authtool",
            &[
                "--create-keyring",
                &admin,
                "--gen-key",
                "-n",
                "client.admin",
                "--cap",
                "mon",
                "allow *",
                "--cap",
                "osd",
                "allow *",
                "--cap",
                "mds",
                "allow *",
                "--cap",
                "mgr",
                "allow *",
            ],
        );
        must("ceph-authtool", &[&mon, "--import-keyring", &admin]);
        let addrs = format!("[v2:{IP}:{},v1:{IP}:{port}]", port + 1);
        must(
            "monmaptool",
            &[
                "--create", "--fsid", &self.fsid, "--addv", "a", &addrs, &map,
            ],
        );
        let conf = self.conf_path().display().to_string();
        must(
            "ceph-mon",
            &[
                "-c",
                &conf,
                "--mkfs",
                "-i",
                "a",
                "--monmap",
                &map,
                "--keyring",
                &mon,
            ],
        );
        daemon(
            "ceph-mon",
            vec!["-c".into(), conf, "-f".into(), "-i".into(), "a".into()],
            self.dir.join("mon.out"),
        );
    }

    fn make_osd(&self) {
        let u = uuid();
        let id = String::from_utf8(self.admin(&["osd", "new", &u]).stdout)
            .unwrap()
            .trim()
            .to_string();
        let conf = self.conf_path().display().to_string();
        must(
            "ceph-osd",
            &[
                "-c",
                &conf,
                "-i",
                &id,
                "--mkfs",
                "--mkkey",
                "--no-mon-config",
                "--osd-uuid",
                &u,
            ],
        );
        let keyring = self.path("osd/keyring");
        self.admin(&[
            "auth",
            "add",
            &format!("osd.{id}"),
            "osd",
            "allow *",
            "mon",
            "allow profile osd",
            "-i",
            &keyring,
        ]);
        daemon(
            "ceph-osd",
            vec!["-c".into(), conf, "-f".into(), "-i".into(), id],
            self.dir.join("osd.out"),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let dump: serde_json::Value =
                serde_json::from_slice(&self.admin(&["osd", "dump", "--format", "json"]).stdout)
                    .unwrap();
            if dump["osds"][0]["up"] == 1 {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "the OSD did not come up within 60 s: {}",
            std::fs::read_to_string(self.dir.join("osd.out")).unwrap_or_default()
        );
    }

    /// `ceph args` as client.admin (panics on failure).
    pub fn admin(&self, args: &[&str]) -> Output {
        let conf = self.conf_path().display().to_string();
        let mut a = vec!["-c", &conf, "--connect-timeout", "30"];
        a.extend_from_slice(args);
        must("ceph", &a)
    }

    /// `rbd args` as client.admin (panics on failure).
    pub fn rbd_admin(&self, args: &[&str]) -> Output {
        let conf = self.conf_path().display().to_string();
        let mut a = vec!["-c", &conf];
        a.extend_from_slice(args);
        must("rbd", &a)
    }

    /// `rbd args` as client.admin, not panicking.
    pub fn rbd_try(&self, args: &[&str]) -> Output {
        let conf = self.conf_path().display().to_string();
        Command::new("rbd")
            .arg("-c")
            .arg(conf)
            .args(args)
            .output()
            .unwrap()
    }

    /// Creates (or returns) user `client.<name>` with caps `caps` (pairs
    /// of daemon type and cap), returning its base64 key.
    pub fn user(&self, name: &str, caps: &[&str]) -> String {
        let entity = format!("client.{name}");
        let mut a = vec!["auth", "get-or-create-key", entity.as_str()];
        a.extend_from_slice(caps);
        String::from_utf8(self.admin(&a).stdout)
            .unwrap()
            .trim()
            .to_string()
    }

    /// A user with ceph-csi's RBD caps on `pool` (what Rook's
    /// `csi-rbd-provisioner` gets), returning its key.
    pub fn rbd_user(&self, name: &str, pool: &str) -> String {
        let osd = format!("profile rbd pool={pool}");
        self.user(
            name,
            &["mon", "profile rbd", "osd", &osd, "mgr", "allow rw"],
        )
    }

    /// Creates an RBD pool `name` (size 1, 8 PGs).
    pub fn pool(&self, name: &str) {
        self.admin(&["osd", "pool", "create", name, "8", "8"]);
        self.rbd_admin(&["pool", "init", name]);
    }

    /// ceph-csi's cluster config listing this cluster as `cluster_id`.
    pub fn cluster_config(&self, cluster_id: &str) -> String {
        serde_json::json!([{"clusterID": cluster_id, "monitors": [self.mon_addr]}]).to_string()
    }

    /// Mounts image `pool/image` as a file under a new directory with
    /// `rbd-fuse` (block access in the container, where there is no
    /// kernel RBD); unmounted on drop. One image only: rbd-fuse watches
    /// every image it shows, and a watched image cannot be removed, so a
    /// whole-pool mount would stall other tests' deletes.
    pub fn fuse(&self, pool: &str, image: &str) -> FuseMount {
        // Never a TempDir: removing a still-mounted directory recursively
        // would unlink (that is, `rbd rm`) every image of the pool.
        let dir = tempfile::tempdir().unwrap().keep();
        let conf = self.conf_path().display().to_string();
        let pid = daemon(
            "rbd-fuse",
            vec![
                "-c".into(),
                conf,
                "-p".into(),
                pool.into(),
                "-r".into(),
                image.into(),
                dir.display().to_string(),
                "-f".into(),
            ],
            self.dir.join(format!("fuse-{pool}-{image}.out")),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if mounted(&dir) {
                return FuseMount {
                    dir,
                    pid,
                    frozen: false,
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("rbd-fuse did not mount within 20 s");
    }
}

fn mounted(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let d = dir.display().to_string();
    mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(d.as_str()))
}

/// An `rbd-fuse` mount: each image of the pool is a file.
pub struct FuseMount {
    dir: PathBuf,
    pid: u32,
    frozen: bool,
}

impl FuseMount {
    /// The file standing for image `name`.
    pub fn image(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Stops `rbd-fuse` (SIGSTOP) as a node that crashed or lost its
    /// network looks to the cluster: its connections stay open but nothing
    /// answers, so its watches and locks stay until the OSD's watch timeout.
    /// (A process killed here would close its sockets, and Ceph would see
    /// it gone at once.) Killed, then unmounted, on drop.
    pub fn freeze(&mut self) {
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGSTOP) };
        self.frozen = true;
    }
}

impl Drop for FuseMount {
    /// Unmounts (retrying while a closing file keeps it busy, then
    /// lazily), and removes the directory only once it is empty.
    fn drop(&mut self) {
        if self.frozen {
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
        }
        for _ in 0..100 {
            let _ = Command::new("umount")
                .arg(&self.dir)
                .stderr(Stdio::null())
                .status();
            if !mounted(&self.dir) {
                let _ = std::fs::remove_dir(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
