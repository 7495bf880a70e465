#![allow(missing_docs)]
//! The single `bindgen!` of the WIT contract (`wit/`), host side.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "kms-plugin",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        "kmshost:plugin/tls-stream.connection": super::streams::StreamHandle,
    },
});
