//! The `eci` program, for the end-to-end tests to run as a child process.

fn main() {
    eci::main();
}
