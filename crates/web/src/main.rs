//! The web app's entry point (trunk builds it for wasm32).

#[cfg(target_arch = "wasm32")]
fn main() {
    ternlight_web::app::start();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("the Ternlight web app runs in a browser: build it with `trunk build` in crates/web");
}
