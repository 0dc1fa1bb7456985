//! A software TPM 2.0 (swtpm) on 127.0.0.1, started by the test; a
//! restart with the same state is a reboot (TPM2_Startup(CLEAR)).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Swtpm {
    state: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Swtpm {
    /// None (after saying what is missing) without swtpm and tpm2-tools.
    pub fn start() -> Option<Swtpm> {
        for tool in ["swtpm", "tpm2_getcap"] {
            if !super::have_command(tool) {
                super::missing(&format!("{tool} (apt install swtpm tpm2-tools)"));
                return None;
            }
        }
        let mut t = Swtpm {
            state: tempfile::tempdir().unwrap(),
            port: 0,
            child: None,
        };
        t.boot();
        Some(t)
    }

    /// The TCTI tpm2-tools reach it by.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Power-cycle: same state, a new TPM2_Startup(CLEAR).
    pub fn reboot(&mut self) {
        self.stop();
        self.boot();
    }

    fn boot(&mut self) {
        // swtpm takes the data port and the one after it for control; a
        // reboot keeps them, so a TCTI taken before stays good.
        let port = if self.port != 0 {
            self.port
        } else {
            loop {
                let p = free_port();
                if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
                    break p;
                }
            }
        };
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", self.state.path().display()))
            .args([
                "--server",
                &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
            ])
            .args([
                "--ctrl",
                &format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1),
            ])
            .args(["--flags", "not-need-init,startup-clear"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start swtpm");
        self.child = Some(child);
        self.port = port;
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "swtpm did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A tpm2-tools command against this TPM; its output and status.
    pub fn tool(&self, args: &[&str]) -> std::process::Output {
        Command::new(args[0])
            .args(&args[1..])
            .env("TPM2TOOLS_TCTI", self.tcti())
            .output()
            .unwrap()
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}
