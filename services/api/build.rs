//! The API reference page's script, built into the binary so that `/docs` works without a CDN:
//! Scalar's standalone bundle, from the npm registry at build time, pinned by version and by
//! the registry's integrity hash, compressed once here and served as it is.
//!
//! An air-gapped build gives the package's tarball instead, in `VOIDRUNNER_SCALAR_TARBALL`
//! (`npm pack @scalar/api-reference@<VERSION>` on a machine with the registry); its hash is
//! checked all the same.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use sha2::Digest;

const PACKAGE: &str = "@scalar/api-reference";
const VERSION: &str = "1.76.4";
/// `npm view @scalar/api-reference@1.76.4 dist.integrity`.
const INTEGRITY: &str =
    "sha512-bHSVv494yuNTcBzmfZR3eYhckOTiu3L6IJmvM2kdKzBVmWqm+JhEHbYc7ydsv7FBSs3vTW9sCz00La2dFgWxVg==";
const SCRIPT: &str = "package/dist/browser/standalone.js";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=VOIDRUNNER_SCALAR_TARBALL");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let tarball = match std::env::var_os("VOIDRUNNER_SCALAR_TARBALL") {
        Some(path) => std::fs::read(&path)
            .unwrap_or_else(|e| fail(&format!("reading VOIDRUNNER_SCALAR_TARBALL {path:?}: {e}"))),
        None => npm_pack(&out),
    };
    let digest = sha2::Sha512::digest(&tarball);
    let integrity = format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    );
    if integrity != INTEGRITY {
        fail(&format!(
            "{PACKAGE}@{VERSION} has integrity {integrity}, not the pinned {INTEGRITY}"
        ));
    }
    let script = extract(&tarball, SCRIPT);
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gzip.write_all(&script).expect("compressing in memory");
    let compressed = gzip.finish().expect("compressing in memory");
    std::fs::write(out.join("api-reference.js.gz"), compressed)
        .unwrap_or_else(|e| fail(&format!("writing to OUT_DIR: {e}")));
    println!("cargo:rustc-env=VOIDRUNNER_SCALAR_VERSION={VERSION}");
}

/// The package's tarball from the npm registry (npm's cache first, so rebuilds stay offline).
fn npm_pack(out: &Path) -> Vec<u8> {
    let file = out.join(format!("scalar-api-reference-{VERSION}.tgz"));
    if let Ok(bytes) = std::fs::read(&file) {
        return bytes;
    }
    let npm = std::env::var("NPM").unwrap_or_else(|_| "npm".into());
    let status = Command::new(&npm)
        .args([
            "pack",
            &format!("{PACKAGE}@{VERSION}"),
            "--silent",
            "--prefer-offline",
        ])
        .arg("--pack-destination")
        .arg(out)
        .status()
        .unwrap_or_else(|e| {
            fail(&format!(
                "running `{npm} pack` ({e}): install npm (Debian: apt-get install npm) or give \
                 the package's tarball in VOIDRUNNER_SCALAR_TARBALL"
            ))
        });
    if !status.success() {
        fail(&format!(
            "`{npm} pack {PACKAGE}@{VERSION}` failed ({status}): is the npm registry reachable? \
             Else give the tarball in VOIDRUNNER_SCALAR_TARBALL"
        ));
    }
    std::fs::read(&file).unwrap_or_else(|e| fail(&format!("reading {}: {e}", file.display())))
}

fn extract(tarball: &[u8], wanted: &str) -> Vec<u8> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tarball));
    let entries = archive
        .entries()
        .unwrap_or_else(|e| fail(&format!("reading the tarball: {e}")));
    for entry in entries {
        let mut entry = entry.unwrap_or_else(|e| fail(&format!("reading the tarball: {e}")));
        let path = entry
            .path()
            .unwrap_or_else(|e| fail(&format!("reading the tarball: {e}")))
            .into_owned();
        if path == Path::new(wanted) {
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .unwrap_or_else(|e| fail(&format!("reading {wanted}: {e}")));
            return bytes;
        }
    }
    fail(&format!("{PACKAGE}@{VERSION} has no {wanted}"))
}

fn fail(message: &str) -> ! {
    panic!("voidrunner-api build: {message}")
}
