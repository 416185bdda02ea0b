//! Compiles `proto/switchboard.proto` to Rust at build time without a `protoc` binary:
//! protox parses the schema in pure Rust and prost-build generates the types.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/switchboard.proto");
    let fds = protox::compile(["proto/switchboard.proto"], ["proto/"])?;
    // Media rides behind a box: most messages have none, and inline it would make every
    // frame value (and every effect that carries one) over a hundred bytes larger.
    prost_build::Config::new()
        .boxed(".switchboard.v1.SendMessage.media")
        .boxed(".switchboard.v1.GroupSend.media")
        .boxed(".switchboard.v1.Message.media")
        // A send's body is decoded once, into a `Bytes` that becomes the queued item's
        // payload without another copy (as a `Vec<u8>` prost copies it twice: into a
        // `Bytes`, then into the `Vec`).
        .bytes([".switchboard.v1.SendMessage.body"])
        .compile_fds(fds)?;
    Ok(())
}
