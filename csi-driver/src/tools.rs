//! Running the external tools the driver needs (mkfs, blkid, resize tools) with argument vectors only.

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("could not run {program}: {source} (is it installed and on PATH?)")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} exited with {status}: {stderr}")]
    Failed {
        program: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Runs `program` with `args`, no shell and no stdin, and returns its output whatever the exit code.
pub fn run_raw<I, S>(program: &str, args: I) -> Result<Output, ToolError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ToolError::Spawn {
            program: program.to_owned(),
            source,
        })
}

/// Runs `program` and fails unless it exits with status 0.
pub fn run<I, S>(program: &str, args: I) -> Result<Output, ToolError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = run_raw(program, args)?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(failure(program, &output))
    }
}

pub fn failure(program: &str, output: &Output) -> ToolError {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    ToolError::Failed {
        program: program.to_owned(),
        status: output.status,
        stderr: text.trim().to_owned(),
    }
}
