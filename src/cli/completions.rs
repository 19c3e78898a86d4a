//! `rearguard completions SHELL` and `rearguard man`: shell completion scripts and man pages,
//! generated from the clap definition (main.rs passes `Cli::command()`), so they never drift
//! from the real arguments.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
pub use clap_complete::Shell;

/// The completion script for `shell`, as text.
pub fn completion_script(mut cmd: clap::Command, shell: Shell) -> Vec<u8> {
    let name = cmd.get_name().to_string();
    let mut script = Vec::new();
    // Generated into memory: clap_complete panics on a failed write, and stdout can be a
    // closed pipe.
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    script
}

/// One man page for the whole command (its SUBCOMMANDS section lists every subcommand).
pub fn man_page(cmd: clap::Command) -> std::io::Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut page)?;
    Ok(page)
}

/// Writes `rearguard.1` and one page per visible subcommand (`rearguard-silence-add.1`, …) into
/// `dir`, creating it. Returns the files written.
pub fn write_man_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    fn write_all(
        cmd: clap::Command,
        dir: &Path,
        written: &mut Vec<PathBuf>,
    ) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            write_all(sub, dir, written)?;
        }
        written.push(clap_mangen::Man::new(cmd).generate_to(dir)?);
        Ok(())
    }
    std::fs::create_dir_all(dir)?;
    // Building first gives subcommands their display names ("rearguard-silence-add").
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_all(cmd, dir, &mut written)?;
    written.sort();
    Ok(written)
}

/// `rearguard completions SHELL`: prints the script on stdout.
pub fn run_completions(cmd: clap::Command, shell: Shell) -> anyhow::Result<ExitCode> {
    let script = completion_script(cmd, shell);
    write_stdout(&script)?;
    Ok(ExitCode::SUCCESS)
}

/// `rearguard man [--dir DIR]`: the page on stdout, or every page into DIR.
pub fn run_man(cmd: clap::Command, dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    match dir {
        None => {
            let page = man_page(cmd).context("cannot render the man page")?;
            write_stdout(&page)?;
        }
        Some(dir) => {
            let written = write_man_pages(cmd, dir)
                .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
            for file in written {
                println!("{}", file.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    fn sample() -> clap::Command {
        clap::Command::new("rearguard")
            .version("1.0")
            .about("watchdog")
            .subcommand(clap::Command::new("run").about("Run the daemon."))
            .subcommand(
                clap::Command::new("silence")
                    .about("Silences.")
                    .subcommand(clap::Command::new("add").about("Add one."))
                    .subcommand(clap::Command::new("hidden").hide(true)),
            )
    }

    #[test]
    fn every_shell_gets_a_script_naming_the_subcommands() {
        for shell in Shell::value_variants() {
            let script = String::from_utf8(completion_script(sample(), *shell)).unwrap();
            for name in ["rearguard", "run", "silence", "add"] {
                assert!(script.contains(name), "{shell}: no {name} in\n{script}");
            }
        }
    }

    #[test]
    fn man_page_lists_subcommands() {
        let page = String::from_utf8(man_page(sample()).unwrap()).unwrap();
        assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
        assert!(page.contains("SUBCOMMANDS"), "{page}");
        assert!(page.contains("Run the daemon."), "{page}");
    }

    #[test]
    fn man_pages_go_one_per_visible_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("man1");
        let written = write_man_pages(sample(), &out).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "rearguard-run.1",
                "rearguard-silence-add.1",
                "rearguard-silence.1",
                "rearguard.1"
            ]
        );
        for file in &written {
            assert!(std::fs::metadata(file).unwrap().len() > 0);
        }
    }
}
