mod common;
use common::*;

#[test]
fn runs_a_command_in_a_cell() {
    let ws = Ws::new();
    let out = ok(&sh(ws.path(), "build", &[], "echo hello; hostname"));
    assert_eq!(out, "hello\ntaskcell\n");
}
