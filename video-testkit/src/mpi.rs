//! Tests across real MPI processes: a test re-runs its own test binary under `mpirun`, where an
//! `#[ignore]`d child test does one rank's work (it finds [`MPI_CHILD_VAR`] set).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set in the environment of every rank [`mpirun`] starts.
pub const MPI_CHILD_VAR: &str = "VIDGEN_MPI_CHILD";

/// Whether this process is a rank started by [`mpirun`].
pub fn is_mpi_child() -> bool {
    std::env::var_os(MPI_CHILD_VAR).is_some()
}

/// Runs test `name` of the current test binary on `np` ranks (`mpirun --allow-run-as-root
/// --oversubscribe`, one rayon thread per rank, `env` added), calling `during` every 50 ms
/// while it runs. Returns whether the job succeeded and its stdout + stderr.
///
/// # Panics
/// `mpirun` cannot be started (install `openmpi-bin`), or the job still runs after `limit`
/// (a hang: the job is killed and its output shown).
pub fn mpirun(
    np: usize,
    name: &str,
    env: &[(&str, String)],
    limit: Duration,
    mut during: impl FnMut(),
) -> (bool, String) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new("mpirun");
    cmd.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        &np.to_string(),
    ])
    .arg(exe)
    .args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(MPI_CHILD_VAR, "1")
    // Ranks share the machine's cores: one rayon thread each.
    .env("RAYON_NUM_THREADS", "1")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .expect("mpirun could not be started (install openmpi-bin)");
    let t0 = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("mpirun's output");
            panic!(
                "mpirun -np {np} {name} still running after {limit:?}: a hang\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        during();
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("mpirun's output");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
