//! Builds every crate of `guest-examples/` for `wasm32-unknown-unknown` and wraps each core
//! module into a component (`wit-component`), so the tests always run the plugins of this
//! checkout. The toolchain: rustup's wasm32 target when it is installed, else Debian's
//! `rustc-web` with build-std (`scripts/wasm-setup.sh` installs it).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const GUESTS: &[&str] = &["ticket", "reputation", "cim", "hostile", "noop", "fortigate"];
const TARGET: &str = "wasm32-unknown-unknown";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let guests = manifest_dir.parent().expect("artifacts/ lives in guest-examples/").to_path_buf();
    let sdk = guests.parent().expect("guest-examples/ lives in the repository").join("sdk");
    for watched in
        [guests.join("Cargo.toml"), guests.join("Cargo.lock"), sdk.join("src"), sdk.join("wit"), sdk.join("Cargo.toml")]
    {
        println!("cargo:rerun-if-changed={}", watched.display());
    }
    for guest in GUESTS {
        println!("cargo:rerun-if-changed={}", guests.join(guest).display());
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // <target>/<profile>/build/<pkg>/out → <target>/wasm-guests: stable across builds of this
    // crate, so the guests' standard library is compiled once.
    let target_dir = out.ancestors().nth(4).map_or_else(|| out.join("wasm-guests"), |t| t.join("wasm-guests"));

    let mut cargo = toolchain();
    cargo
        .current_dir(&guests)
        .args(["build", "--release", "--locked", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    let output = cargo.output().unwrap_or_else(|e| panic!("running cargo for the guest examples: {e}"));
    if !output.status.success() {
        panic!("building the guest examples failed:\n{}", String::from_utf8_lossy(&output.stderr));
    }

    let mut constants = String::new();
    for guest in GUESTS {
        let module = target_dir.join(TARGET).join("release").join(format!("{guest}.wasm"));
        let bytes = std::fs::read(&module).unwrap_or_else(|e| panic!("reading {}: {e}", module.display()));
        let component = wit_component::ComponentEncoder::default()
            .module(&bytes)
            .and_then(|encoder| encoder.validate(true).encode())
            .unwrap_or_else(|e| panic!("making {guest} a component: {e:?}"));
        let path = out.join(format!("{guest}.wasm"));
        std::fs::write(&path, component).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        constants.push_str(&format!(
            "/// The `{guest}` example, a component.\npub const {}: &str = {:?};\n",
            guest.to_uppercase(),
            path.display().to_string()
        ));
    }
    std::fs::write(out.join("guests.rs"), constants).expect("writing guests.rs");
}

/// A cargo that builds for wasm32, with none of the outer build's environment (its target
/// directory, flags and jobserver belong to the host build).
fn toolchain() -> Command {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let rustup_target = sysroot.is_some_and(|s| s.join("lib/rustlib").join(TARGET).exists());
    let mut command = if rustup_target {
        let mut c = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.env_clear().env("RUSTC", &rustc);
        c
    } else if debian_toolchain(Path::new("/usr/bin/rustc")) {
        let mut c = Command::new("/usr/bin/cargo");
        c.env_clear().env("RUSTC", "/usr/bin/rustc").env("RUSTC_BOOTSTRAP", "1");
        c.arg("-Zbuild-std=std,panic_abort");
        c
    } else {
        panic!(
            "no Rust toolchain that builds {TARGET} plugins: `rustup target add {TARGET}`, or run scripts/wasm-setup.sh \
             (Debian's rustc-web with build-std)"
        );
    };
    for (key, value) in env::vars_os() {
        let key_text = key.to_string_lossy();
        let keep = matches!(key_text.as_ref(), "PATH" | "HOME" | "CARGO_HOME" | "RUSTUP_HOME" | "RUSTUP_TOOLCHAIN")
            || key_text.ends_with("_proxy")
            || key_text.ends_with("_PROXY")
            || key_text.starts_with("SSL_CERT")
            || key_text == "CARGO_NET_OFFLINE";
        if keep {
            command.env(key, value);
        }
    }
    command
}

fn debian_toolchain(rustc: &Path) -> bool {
    Command::new(rustc)
        .args(["--print", "target-list"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l == TARGET))
}
