//! The compile errors users see for modelling mistakes. Each `tests/ui/*.rs`
//! holds one mistake; its `.stderr` is what the user reads.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
