//! Copies the Temporal API's protobuf descriptor set (built by `temporalio-protos`) next to the
//! code, so `payflow replay` can read histories in proto3 JSON.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TEMPORALIO_PROTOS_DESCRIPTOR_PATH");
    let source = std::env::var("DEP_TEMPORALIO_PROTOS_DESCRIPTOR_PATH")
        .expect("temporalio-protos must be a direct dependency");
    let out = std::path::Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR"))
        .join("temporal_descriptors.bin");
    std::fs::copy(source, out).expect("copy the descriptor set");
}
