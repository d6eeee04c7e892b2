//! No orphans after `spindle run` dies: every child it starts (workers and function processes)
//! runs through `spindle __with-parent <pid> -- program args…`, which asks the kernel to send
//! it SIGTERM when its parent dies (Linux `PR_SET_PDEATHSIG`, kept across `exec`) and then
//! becomes `program`. A `kill -9` of `spindle run` thus stops its workers (each with a final
//! checkpoint) and its functions, instead of leaving them holding ports and files.
//!
//! The death signal fires when the parent *thread* that forked the child ends; the children
//! are spawned from the runtime's worker threads, which live as long as `spindle run`.

use std::ffi::OsString;

/// The hidden subcommand's name.
pub const SUBCOMMAND: &str = "__with-parent";

/// Arguments that make `exe` run `program` under the guard, for the parent `parent`.
pub fn guarded(exe: &std::path::Path, parent: u32, program: &std::ffi::OsStr) -> (OsString, Vec<OsString>) {
    (
        exe.as_os_str().to_os_string(),
        vec![
            SUBCOMMAND.into(),
            parent.to_string().into(),
            "--".into(),
            program.to_os_string(),
        ],
    )
}

/// Why the guard could not become the program.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("{SUBCOMMAND}: expected `<parent pid> -- program [args…]`")]
    Usage,
    #[error("{SUBCOMMAND}: the parent process {0} is already gone")]
    ParentGone(u32),
    #[error("{SUBCOMMAND}: cannot ask for a parent-death signal: {0}")]
    Prctl(std::io::Error),
    #[error("{SUBCOMMAND}: cannot run {program:?}: {error}")]
    Exec { program: OsString, error: std::io::Error },
}

/// Parses `<parent pid> -- program [args…]`.
pub fn parse(args: &[OsString]) -> Result<(u32, &[OsString]), GuardError> {
    let [parent, dashes, program @ ..] = args else {
        return Err(GuardError::Usage);
    };
    let parent = parent.to_str().and_then(|p| p.parse().ok()).ok_or(GuardError::Usage)?;
    if dashes != "--" || program.is_empty() {
        return Err(GuardError::Usage);
    }
    Ok((parent, program))
}

/// Becomes `program` (returns only on failure).
#[cfg(target_os = "linux")]
pub fn exec(parent: u32, program: &[OsString]) -> GuardError {
    use std::os::unix::process::CommandExt as _;
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM)) {
        return GuardError::Prctl(e.into());
    }
    // The parent may have died before the signal was asked for: then this process was
    // re-parented already and no signal will come.
    if rustix::process::getppid().map(|p| p.as_raw_pid() as u32) != Some(parent) {
        return GuardError::ParentGone(parent);
    }
    let error = std::process::Command::new(&program[0]).args(&program[1..]).exec();
    GuardError::Exec {
        program: program[0].clone(),
        error,
    }
}

/// Elsewhere there is no parent-death signal: just become `program`.
#[cfg(all(unix, not(target_os = "linux")))]
pub fn exec(_parent: u32, program: &[OsString]) -> GuardError {
    use std::os::unix::process::CommandExt as _;
    let error = std::process::Command::new(&program[0]).args(&program[1..]).exec();
    GuardError::Exec {
        program: program[0].clone(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_guard_line_round_trips_and_bad_ones_are_refused() {
        let (exe, mut line) = guarded(std::path::Path::new("/bin/spindle"), 42, "python3".as_ref());
        assert_eq!(exe, "/bin/spindle");
        line.push("f.py".into());
        assert_eq!(line[0], SUBCOMMAND);
        let (parent, program) = parse(&line[1..]).unwrap();
        assert_eq!(parent, 42);
        assert_eq!(program, &args(&["python3", "f.py"])[..]);

        assert!(matches!(parse(&args(&["42", "--"])), Err(GuardError::Usage)));
        assert!(matches!(parse(&args(&["x", "--", "p"])), Err(GuardError::Usage)));
        assert!(matches!(parse(&args(&["42", "p"])), Err(GuardError::Usage)));
    }
}
