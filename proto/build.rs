//! Compiles `proto/switchboard.proto` to Rust at build time without a `protoc` binary:
//! protox parses the schema in pure Rust and prost-build generates the types.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/switchboard.proto");
    let fds = protox::compile(["proto/switchboard.proto"], ["proto/"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
