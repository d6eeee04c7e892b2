//! `spindle checkpoints delete`, as the operator's cleanup job runs it: every object of the
//! named application goes, other applications' stay.

use std::process::Command;

#[test]
fn deletes_the_named_application_only() {
    let dir = std::env::temp_dir().join(format!("spindle-cli-delete-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for app in ["greeter", "other"] {
        let cp = dir.join(app).join("checkpoints/00000000000000000001");
        std::fs::create_dir_all(&cp).unwrap();
        std::fs::write(cp.join("part-g1-w0.bin"), b"part").unwrap();
        std::fs::write(cp.join("MANIFEST.json"), b"{}").unwrap();
        std::fs::write(dir.join(app).join("generation"), b"1").unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(["checkpoints", "delete", "--storage"])
        .arg(format!("file://{}", dir.display()))
        .args(["--application", "greeter"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("deleted 3 objects"), "{stdout}");
    let left = |app: &str| walk(&dir.join(app));
    assert_eq!(left("greeter"), 0, "every object of greeter is deleted");
    assert_eq!(left("other"), 3, "other applications are untouched");
    let _ = std::fs::remove_dir_all(&dir);
}

fn walk(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 })
        .sum()
}
