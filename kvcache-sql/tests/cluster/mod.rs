//! A private PostgreSQL cluster that a test starts and stops, with the machine's `initdb` and
//! `pg_ctl`, on a free port, as the `postgres` user when the test runs as root.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A running cluster in a temporary directory; stopped and deleted when dropped.
pub(crate) struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub(crate) port: u16,
}

impl Cluster {
    /// Creates and starts a cluster, or prints why it cannot and is `None` (a panic under
    /// `CI=true`, where the machine must have PostgreSQL's server binaries).
    pub(crate) fn start() -> Option<Self> {
        let Some(bin) = server_binaries() else {
            let notice = "no /usr/lib/postgresql/*/bin/initdb for a private PostgreSQL cluster";
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{notice} (and CI=true)"
            );
            eprintln!("SKIPPED: {notice}");
            return None;
        };
        let dir = tempfile::tempdir().expect("a temporary directory");
        if is_root() {
            run(Command::new("chown").arg("postgres:").arg(dir.path()));
        }
        let cluster = Cluster {
            bin,
            dir,
            port: crate::common::closed_port(),
        };
        run(cluster
            .command("initdb")
            .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
            .arg(cluster.data()));
        cluster.start_again();
        Some(cluster)
    }

    /// The URL of its `postgres` database.
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts it after [`stop`](Cluster::stop), waiting at most a minute.
    pub(crate) fn start_again(&self) {
        let options = format!(
            "-F -p {} -h 127.0.0.1 -k {}",
            self.port,
            self.dir.path().display()
        );
        run(self
            .command("pg_ctl")
            .args(["start", "--wait", "--timeout=60", "-o", &options, "-l"])
            .arg(self.dir.path().join("log"))
            .arg("-D")
            .arg(self.data()));
    }

    /// Stops it, closing every connection, waiting at most a minute.
    pub(crate) fn stop(&self) {
        run(&mut self.stop_command());
    }

    /// Stops the server's processes with `SIGSTOP`, the postmaster first, until the guard is
    /// dropped: its connections stay open, and nothing answers on them.
    pub(crate) fn freeze(&self) -> crate::common::Frozen {
        let pid = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .expect("postmaster.pid")
            .lines()
            .next()
            .and_then(|line| line.trim().parse::<u32>().ok())
            .expect("the postmaster's pid");
        let mut pids = vec![pid];
        pids.extend(children(pid));
        crate::common::Frozen::new(pids)
    }

    fn stop_command(&self) -> Command {
        let mut command = self.command("pg_ctl");
        command
            .args(["stop", "--wait", "--timeout=60", "--mode=fast", "-D"])
            .arg(self.data());
        command
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `program` of the server's binaries, run as `postgres` when this process is root.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Stopped already, or never started: pg_ctl says so, and there is nothing to do.
        let _ = self.stop_command().output();
    }
}

/// The processes whose parent is `parent`.
fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid ...`; the name may hold spaces and parentheses.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

/// The newest `/usr/lib/postgresql/VERSION/bin` holding `initdb`.
fn server_binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Path::new("/proc/self")
        .metadata()
        .is_ok_and(|meta| meta.uid() == 0)
}

/// Runs `command`, panicking with its output when it fails.
fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
