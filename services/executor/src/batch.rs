//! Batch scripts: one command per line, run in one remote shell so `cd` persists; `#` comments
//! and blank lines are skipped, CRLF is normalised, and the first failing step stops the script.

use crate::error::ExecError;

/// The most steps a batch may have.
pub(crate) const MAX_STEPS: usize = 500;
/// The longest line.
pub(crate) const MAX_LINE: usize = 4096;

/// The steps of a script, in order.
pub(crate) fn steps(script: &str) -> Result<Vec<String>, ExecError> {
    let normalised = script.replace("\r\n", "\n").replace('\r', "\n");
    let steps: Vec<String> = normalised
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if steps.is_empty() {
        return Err(ExecError::Invalid(
            "the batch script has no commands (only blank lines or # comments)".into(),
        ));
    }
    if steps.len() > MAX_STEPS {
        return Err(ExecError::Invalid(format!(
            "the batch script has {} steps; at most {MAX_STEPS} are allowed",
            steps.len()
        )));
    }
    if let Some((i, _)) = steps.iter().enumerate().find(|(_, l)| l.len() > MAX_LINE) {
        return Err(ExecError::Invalid(format!(
            "step {} is longer than {MAX_LINE} bytes",
            i + 1
        )));
    }
    if steps.iter().any(|l| l.contains('\0')) {
        return Err(ExecError::Invalid(
            "the batch script contains a NUL byte".into(),
        ));
    }
    Ok(steps)
}

/// The remote script for the steps (see [`crate::ssh::batch_script`]).
pub(crate) fn script(steps: &[String]) -> Result<String, ExecError> {
    crate::ssh::batch_script(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_blanks_and_crlf() {
        let s = steps("# setup\r\ncd /tmp\r\n\r\n   \n  # indented comment\nls -l\r\necho done")
            .unwrap();
        assert_eq!(s, vec!["cd /tmp", "ls -l", "echo done"]);
        assert!(steps("# only\n\n").is_err());
        assert!(steps(&"true\n".repeat(MAX_STEPS + 1)).is_err());
    }
}
