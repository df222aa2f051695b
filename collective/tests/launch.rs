//! Without the `mpi` feature, a process that an MPI launcher started as one of several ranks
//! refuses to run (each would otherwise work alone as rank 0 and overwrite the others'
//! outputs); one announced rank, or no launcher, is a one-process `Local` group.
#![cfg(not(feature = "mpi"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

#[test]
#[ignore = "run by launcher_variables_decide in a child process"]
fn init_child() {
    let Ok(want) = std::env::var("VIDGEN_TEST_WANT") else {
        return;
    };
    match vidgen_collective::init() {
        Ok(g) => assert_eq!(want, format!("ok {} {}", g.backend(), g.world_size())),
        Err(e) => assert!(
            want == "err" && e.to_string().contains("`mpi` feature"),
            "{e}"
        ),
    }
}

#[test]
fn launcher_variables_decide() {
    let exe = std::env::current_exe().unwrap();
    for (vars, want) in [
        (vec![], "ok local 1"),
        (vec![("OMPI_COMM_WORLD_SIZE", "1")], "ok local 1"),
        (vec![("OMPI_COMM_WORLD_SIZE", "2")], "err"),
        (vec![("PMI_SIZE", "4")], "err"),
        (vec![("SLURM_NTASKS", "8")], "ok local 1"),
    ] {
        let mut c = Command::new(&exe);
        c.args(["--exact", "init_child", "--ignored"])
            .env_remove("OMPI_COMM_WORLD_SIZE")
            .env_remove("PMI_SIZE")
            .env("VIDGEN_TEST_WANT", want);
        for (k, v) in &vars {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{vars:?} -> want {want}:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
