//! `voidrunner images build [NAME…]`: the offline image builder (`scripts/build-images.sh`,
//! built into the binary so that it works outside a clone of the repository), with a progress
//! bar per image on a terminal and its own lines elsewhere.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::commands::doctor::builder_name;

const BUILDER: &str = include_str!("../../../../scripts/build-images.sh");
const SERVICES: &str = include_str!("../../../../scripts/lib/services.sh");
const CATALOG_READER: &str = include_str!("../../../../scripts/lib/catalog.py");
const CATALOG: &str = include_str!("../../../../languages/catalog.toml");

/// The stages of one image, as the builder reports them: installing its packages, then built.
const STAGES: u64 = 2;

#[derive(clap::Subcommand)]
pub enum Images {
    /// Builds the language catalog's images offline (a Debian 13 base by debootstrap, each
    /// image's packages on top, then `docker import`); with no NAME every image of the catalog,
    /// `compose-base` on request. An image whose definition did not change is not rebuilt.
    /// Needs root, debootstrap (installed when missing), python3 and the Docker engine.
    Build { names: Vec<String> },
}

impl Images {
    pub async fn execute(self) -> u8 {
        match self {
            Images::Build { names } => build(&names).await,
        }
    }
}

async fn build(names: &[String]) -> u8 {
    let dir = match unpack() {
        Ok(dir) => dir,
        Err(error) => {
            eprintln!("voidrunner: cannot write the image builder: {error}");
            return 1;
        }
    };
    let child = tokio::process::Command::new("bash")
        .arg(dir.path().join("scripts/build-images.sh"))
        .args(names)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => {
            eprintln!("voidrunner: cannot run bash: {error}");
            return 1;
        }
    };
    let Some(stderr) = child.stderr.take() else {
        return 1;
    };
    let mut progress = Progress::new();
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        progress.line(&line);
    }
    let status = child.wait().await;
    progress.finish();
    match status {
        Ok(status) if status.success() => 0,
        Ok(status) => {
            eprintln!("voidrunner: the image build failed ({status}); its lines are above");
            1
        }
        Err(error) => {
            eprintln!("voidrunner: waiting for the image build: {error}");
            1
        }
    }
}

/// The builder and the helpers it sources, in a directory of their own.
fn unpack() -> std::io::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let scripts = dir.path().join("scripts");
    std::fs::create_dir_all(scripts.join("lib"))?;
    write_executable(&scripts.join("build-images.sh"), BUILDER)?;
    write_executable(&scripts.join("lib/services.sh"), SERVICES)?;
    write_executable(&scripts.join("lib/catalog.py"), CATALOG_READER)?;
    std::fs::create_dir_all(dir.path().join("languages"))?;
    std::fs::write(dir.path().join("languages/catalog.toml"), CATALOG)?;
    Ok(dir)
}

fn write_executable(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Bars driven by the builder's `==> ` lines: one per image, two stages each.
struct Progress {
    bars: MultiProgress,
    images: HashMap<String, ProgressBar>,
    terminal: bool,
}

impl Progress {
    fn new() -> Progress {
        let target = ProgressDrawTarget::stderr();
        let terminal = !target.is_hidden();
        Progress {
            bars: MultiProgress::with_draw_target(target),
            images: HashMap::new(),
            terminal,
        }
    }

    fn bar(&mut self, name: &str) -> ProgressBar {
        if let Some(bar) = self.images.get(name) {
            return bar.clone();
        }
        let style = ProgressStyle::with_template("{spinner} {prefix:>12} [{bar:12}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = self.bars.add(ProgressBar::new(STAGES));
        bar.set_style(style);
        bar.set_prefix(name.to_owned());
        bar.set_message("waiting for its turn");
        bar.enable_steady_tick(Duration::from_millis(120));
        self.images.insert(name.to_owned(), bar.clone());
        bar
    }

    fn line(&mut self, line: &str) {
        if !self.terminal {
            eprintln!("{line}");
            return;
        }
        let text = line.strip_prefix("==> ").unwrap_or(line);
        if let Some(list) = text
            .strip_prefix("images ")
            .and_then(|rest| rest.split(" from ").next())
        {
            for name in list.split_whitespace() {
                self.bar(name);
            }
            return;
        }
        let Some((subject, what)) = text.split_once(": ") else {
            let _ = self.bars.println(line);
            return;
        };
        let name = builder_name(subject).unwrap_or(subject).to_owned();
        if !self.images.contains_key(&name) {
            let _ = self.bars.println(line);
            return;
        }
        let bar = self.bar(&name);
        let (position, message) = if what.starts_with("apt-get install") {
            (1, "installing its packages".to_owned())
        } else if what.starts_with("built") || what.starts_with("up to date") {
            (STAGES, format!("{subject}: {what}"))
        } else if what.contains("FAILED") || what.contains("ERROR") || line.contains("ERROR") {
            (bar.position(), format!("failed: {what}"))
        } else {
            (bar.position(), what.to_owned())
        };
        bar.set_position(position);
        bar.set_message(message);
        if position == STAGES {
            bar.finish();
        }
    }

    fn finish(&mut self) {
        for bar in self.images.values() {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }
}
