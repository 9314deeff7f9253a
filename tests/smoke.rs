mod common;
use common::*;

#[test]
fn runs_a_command_in_a_cell() {
    let ws = Ws::new();
    let out = ok(&sh(ws.path(), "build", &[], "echo hello; hostname"));
    assert_eq!(out, "hello\ntaskcell\n");
}

/// HOME=/ (a container's user without an entry in /etc/passwd) is refused with what to do,
/// not a tmpfs over the cell's root that fails later at "making /dev read-only".
#[test]
fn a_home_of_slash_is_refused_with_what_to_do() {
    let ws = Ws::new();
    let o = taskcell(ws.path(), &["run", "-p", "base", "--", "/bin/true"])
        .env("HOME", "/")
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("set HOME to a directory"),
        "{}",
        stderr(&o)
    );
    assert!(
        !stderr(&o).contains("making /dev read-only"),
        "{}",
        stderr(&o)
    );
}
