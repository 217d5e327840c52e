//! Build script: compiles the wire contract in `schemas/veto/v1` with prost, using protox so no system `protoc` is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "schemas/veto/v1/event.proto",
        "schemas/veto/v1/decision.proto",
        "schemas/veto/v1/tag_update.proto",
        "schemas/veto/v1/dead_letter.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["schemas"])?;
    prost_build::Config::new()
        .btree_map(["."])
        .compile_fds(fds)?;
    Ok(())
}
