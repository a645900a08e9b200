//! `eci`: the edge container instance platform's one binary; the program lives in the library.

fn main() {
    eci::main();
}
