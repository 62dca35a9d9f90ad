fn main() {
    // QuickJS's C stack lives in linear memory; 4 MiB leaves room under the 3 MiB the guest lets
    // JavaScript recursion use before it throws a RangeError.
    println!("cargo:rustc-link-arg=-zstack-size=4194304");
}
