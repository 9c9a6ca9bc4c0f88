//! The quayside binary once more, under another name: `scripts/build-images.sh` with
//! `PROFILE=dev` (the tests' images) links this one statically with
//! `cargo rustc --example quayside-static -- -C target-feature=+crt-static`. As an example it is
//! built with the features `cargo test` resolves, so that link reuses everything `cargo test`
//! has compiled already instead of a second static build of all the dependencies, and it never
//! replaces `target/debug/quayside`, which other tests run meanwhile (BENCHMARKS.md,
//! "Clean cargo test").
#[path = "../src/main.rs"]
mod quayside_main;

fn main() -> std::process::ExitCode {
    quayside_main::main()
}
