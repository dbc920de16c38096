//! Ternlight's web app (Leptos, client-side rendered, built by trunk from `index.html`). The engine runs in the
//! npm package's Web Worker; this crate is the page around it.
//!
//! - [`reader`]: the on-device reader-state detector behind the adaptive UI (plain Rust, tested natively).
//! - `app` (wasm32): the page.
//! - `engine` (wasm32): the worker client.
//! - `heatmap` (wasm32): attention maps drawn on a canvas.
//! - `compare` (wasm32): one prompt under two attention policies, side by side.

#![warn(missing_docs)]

#[cfg(target_arch = "wasm32")]
pub mod app;
#[cfg(target_arch = "wasm32")]
pub mod compare;
#[cfg(target_arch = "wasm32")]
pub mod engine;
#[cfg(target_arch = "wasm32")]
pub mod heatmap;
pub mod reader;
