//! A private MariaDB server that a test starts and stops, with the machine's
//! `mariadb-install-db` and `mariadbd`, on a free port, as the `mysql` user when the test runs
//! as root.

use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

const INSTALL_DB: &str = "/usr/bin/mariadb-install-db";
const SERVER: &str = "/usr/sbin/mariadbd";

/// A running server in a temporary directory; stopped and deleted when dropped.
pub(crate) struct Server {
    dir: tempfile::TempDir,
    pub(crate) port: u16,
    process: Mutex<Option<Child>>,
}

impl Server {
    /// Creates and starts a server, or prints why it cannot and is `None` (a panic under
    /// `CI=true`, where the machine must have MariaDB's server binaries).
    pub(crate) fn start() -> Option<Self> {
        if !Path::new(INSTALL_DB).exists() || !Path::new(SERVER).exists() {
            let notice = format!("no {INSTALL_DB} and {SERVER} for a private MariaDB server");
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{notice} (and CI=true)"
            );
            eprintln!("SKIPPED: {notice}");
            return None;
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        if is_root() {
            run(Command::new("chown").arg("mysql:").arg(dir.path()));
        }
        let server = Server {
            dir,
            port: crate::common::closed_port(),
            process: Mutex::new(None),
        };
        run(Command::new(INSTALL_DB)
            .args(server.options())
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]));
        server.start_again();
        Some(server)
    }

    /// The URL of its `mysql` database, as `root`.
    pub(crate) fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/mysql", self.port)
    }

    /// Starts it after [`stop`](Server::stop), waiting at most a minute for it to listen.
    pub(crate) fn start_again(&self) {
        let child = Command::new(SERVER)
            .args(self.options())
            .arg(format!("--port={}", self.port))
            .arg(format!(
                "--socket={}",
                self.dir.path().join("sock").display()
            ))
            .arg(format!(
                "--pid-file={}",
                self.dir.path().join("pid").display()
            ))
            // With its grants (root@localhost, no password, which 127.0.0.1 resolves to): a
            // server without them lists no client host and port, which the backend needs to find
            // a connection's socket.
            .args(["--bind-address=127.0.0.1", "--skip-log-bin"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("{SERVER}: {error}"));
        *self.process.lock().unwrap_or_else(PoisonError::into_inner) = Some(child);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{SERVER} did not listen on port {} within a minute",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Shuts it down, closing every connection, and waits for it to exit.
    pub(crate) fn stop(&self) {
        if let Some(mut child) = self.take() {
            run(Command::new("kill").arg(child.id().to_string()));
            child.wait().expect("the server exits");
        }
    }

    /// Stops the server with `SIGSTOP` until the guard is dropped: its connections stay open,
    /// and nothing answers on them.
    pub(crate) fn freeze(&self) -> crate::common::Frozen {
        let pid = self
            .process
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .expect("the server runs")
            .id();
        crate::common::Frozen::new(vec![pid])
    }

    fn take(&self) -> Option<Child> {
        self.process
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// What both programs are told: no option files, this data directory, a small log, and
    /// the `mysql` user when run as root.
    fn options(&self) -> Vec<String> {
        let mut options = vec![
            "--no-defaults".to_owned(),
            format!("--datadir={}", self.data().display()),
            "--innodb-log-file-size=4M".to_owned(),
        ];
        if is_root() {
            options.push("--user=mysql".to_owned());
        }
        options
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Already stopped, or a test failed: nothing to report, and no panic in a panic.
        if let Some(mut child) = self.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
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
