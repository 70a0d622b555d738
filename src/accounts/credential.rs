//! Where the app-specific password comes from, and its normalisation.
//!
//! First found wins: the vault entry of the account, then `password_file`, then
//! `password_command` (`sh -c`, its stdout, 10 s at most), then the environment variable
//! `ICLOUD_BRIDGE_APP_PASSWORD` (only when the config has a single account). Every value is
//! trimmed and normalised. Errors name the source, never the secret.

use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::accounts::vault::{Vault, VaultError};
use crate::config::AccountConfig;

/// The environment variable read as the last source (single account only).
pub const ENV_VAR: &str = "ICLOUD_BRIDGE_APP_PASSWORD";

/// How long `password_command` may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Most bytes read from a password file or command.
const MAX_LEN: u64 = 64 * 1024;

pub use crate::secret::Secret;

/// Normalise a pasted app-specific password: trim; and when the value has the shape of an
/// app-specific password (16 letters, in any case, optionally in four groups of four
/// separated by dashes and/or spaces) return it lower-case as `xxxx-xxxx-xxxx-xxxx`
/// (`ABCD EFGH IJKL MNOP` and `abcdefghijklmnop` both give `abcd-efgh-ijkl-mnop`).
///
/// Any other value is only trimmed, so that the password of a generic (non-iCloud) upstream
/// keeps its case and inner spaces; such a value never passes [`looks_like_app_password`].
pub fn normalise(input: &str) -> String {
    let trimmed = input.trim();
    let compact: String = trimmed.chars().filter(|c| !c.is_whitespace()).collect();
    let letters: String = compact.chars().filter(|&c| c != '-').collect();
    let grouped = compact.len() == 19
        && compact
            .char_indices()
            .all(|(i, c)| if i % 5 == 4 { c == '-' } else { c != '-' });
    let plain = !compact.contains('-');
    if letters.len() == 16 && letters.chars().all(|c| c.is_ascii_alphabetic()) && (grouped || plain)
    {
        let l = letters.to_ascii_lowercase();
        return format!("{}-{}-{}-{}", &l[0..4], &l[4..8], &l[8..12], &l[12..16]);
    }
    trimmed.to_string()
}

/// Apple's format for app-specific passwords: `^[a-z]{4}-[a-z]{4}-[a-z]{4}-[a-z]{4}$`.
pub fn looks_like_app_password(s: &str) -> bool {
    s.len() == 19
        && s.bytes().enumerate().all(|(i, b)| {
            if i % 5 == 4 {
                b == b'-'
            } else {
                b.is_ascii_lowercase()
            }
        })
}

/// Where a credential came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialSource {
    Vault,
    File,
    Command,
    Env,
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CredentialSource::Vault => "vault",
            CredentialSource::File => "password_file",
            CredentialSource::Command => "password_command",
            CredentialSource::Env => ENV_VAR,
        })
    }
}

/// A resolved app-specific password.
#[derive(Debug, Clone)]
pub struct Credential {
    pub secret: Secret,
    pub source: CredentialSource,
    /// When it was stored: the vault's timestamp, or the password file's modification time;
    /// `None` for a command or the environment.
    pub set_at: Option<SystemTime>,
}

/// Why a configured credential source could not be read. Names the source, never the
/// secret, and never the output of `password_command`.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("account {account}: {source}")]
    Vault {
        account: String,
        #[source]
        source: VaultError,
    },
    #[error("account {account}: cannot read password_file {path}: {source}")]
    File {
        account: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("account {account}: password_file {path} is empty")]
    FileEmpty { account: String, path: PathBuf },
    #[error("account {account}: password_file {path} is not UTF-8 text")]
    FileNotText { account: String, path: PathBuf },
    #[error("account {account}: cannot run password_command: {source}")]
    CommandSpawn {
        account: String,
        #[source]
        source: std::io::Error,
    },
    #[error("account {account}: password_command failed ({status}); its output is not shown")]
    CommandFailed { account: String, status: String },
    #[error("account {account}: password_command did not finish within {secs} s and was stopped")]
    CommandTimeout { account: String, secs: u64 },
    #[error("account {account}: password_command printed nothing")]
    CommandEmpty { account: String },
    #[error("account {account}: password_command did not print UTF-8 text")]
    CommandNotText { account: String },
}

/// The app-specific password of `account`, first found wins: vault, `password_file`,
/// `password_command`, `ICLOUD_BRIDGE_APP_PASSWORD` (only if `single_account`). Values are
/// trimmed and normalised. `Ok(None)` when none is set.
///
/// Blocking (file reads, and the command may run up to 10 s): call it from
/// `tokio::task::spawn_blocking` in async code.
pub fn resolve(
    account: &AccountConfig,
    vault: &Vault,
    single_account: bool,
) -> Result<Option<Credential>, CredentialError> {
    let env = if single_account {
        std::env::var(ENV_VAR).ok()
    } else {
        None
    };
    resolve_with(account, vault, env, COMMAND_TIMEOUT)
}

/// [`resolve`] with the environment value and the command timeout given (for tests).
fn resolve_with(
    account: &AccountConfig,
    vault: &Vault,
    env: Option<String>,
    timeout: Duration,
) -> Result<Option<Credential>, CredentialError> {
    let name = &account.name;
    let found = |s: &str, source, set_at| Credential {
        secret: Secret::new(normalise(s)),
        source,
        set_at,
    };

    if let Some((secret, set_at)) = vault.get(name).map_err(|source| CredentialError::Vault {
        account: name.clone(),
        source,
    })? {
        if !secret.expose().trim().is_empty() {
            return Ok(Some(found(
                secret.expose(),
                CredentialSource::Vault,
                Some(set_at),
            )));
        }
    }

    if let Some(path) = &account.password_file {
        let io_err = |source| CredentialError::File {
            account: name.clone(),
            path: path.clone(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io_err)?;
        let mtime = file.metadata().and_then(|m| m.modified()).ok();
        let mut bytes = Vec::new();
        file.take(MAX_LEN).read_to_end(&mut bytes).map_err(io_err)?;
        let text = String::from_utf8(bytes).map_err(|_| CredentialError::FileNotText {
            account: name.clone(),
            path: path.clone(),
        })?;
        if text.trim().is_empty() {
            return Err(CredentialError::FileEmpty {
                account: name.clone(),
                path: path.clone(),
            });
        }
        return Ok(Some(found(&text, CredentialSource::File, mtime)));
    }

    if let Some(cmd) = &account.password_command {
        let text = run_command(name, cmd, timeout)?;
        return Ok(Some(found(&text, CredentialSource::Command, None)));
    }

    if let Some(v) = env.filter(|v| !v.trim().is_empty()) {
        return Ok(Some(found(&v, CredentialSource::Env, None)));
    }
    Ok(None)
}

/// Run `sh -c cmd` and return its stdout; stdin is closed, stderr is passed through.
fn run_command(account: &str, cmd: &str, timeout: Duration) -> Result<String, CredentialError> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| CredentialError::CommandSpawn {
            account: account.to_string(),
            source,
        })?;
    // Read stdout on a thread so a chatty command cannot block on a full pipe while we wait.
    let reader = child.stdout.take().map(|out| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = out.take(MAX_LEN).read_to_end(&mut bytes);
            bytes
        })
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CredentialError::CommandTimeout {
                    account: account.to_string(),
                    secs: timeout.as_secs_f64().ceil() as u64,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CredentialError::CommandSpawn {
                    account: account.to_string(),
                    source,
                });
            }
        }
    };
    if !status.success() {
        return Err(CredentialError::CommandFailed {
            account: account.to_string(),
            status: status.to_string(),
        });
    }
    // The command has exited; a background child still holding stdout open must not hang us.
    let bytes = match reader {
        Some(handle) => {
            let deadline = Instant::now() + Duration::from_secs(1);
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if !handle.is_finished() {
                return Err(CredentialError::CommandTimeout {
                    account: account.to_string(),
                    secs: timeout.as_secs_f64().ceil() as u64,
                });
            }
            handle.join().unwrap_or_default()
        }
        None => Vec::new(),
    };
    let text = String::from_utf8(bytes).map_err(|_| CredentialError::CommandNotText {
        account: account.to_string(),
    })?;
    if text.trim().is_empty() {
        return Err(CredentialError::CommandEmpty {
            account: account.to_string(),
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_table() {
        let cases = [
            ("abcd-efgh-ijkl-mnop", "abcd-efgh-ijkl-mnop"),
            ("  abcd-efgh-ijkl-mnop\n", "abcd-efgh-ijkl-mnop"),
            ("ABCD-EFGH-IJKL-MNOP", "abcd-efgh-ijkl-mnop"),
            ("abcdefghijklmnop", "abcd-efgh-ijkl-mnop"),
            ("AbCdEfGhIjKlMnOp", "abcd-efgh-ijkl-mnop"),
            ("abcd efgh ijkl mnop", "abcd-efgh-ijkl-mnop"),
            ("abcd - efgh - ijkl - mnop", "abcd-efgh-ijkl-mnop"),
            ("\tABCD EFGH IJKL MNOP \r\n", "abcd-efgh-ijkl-mnop"),
            // Not app-password shaped: only trimmed.
            ("Correct-Horse-1", "Correct-Horse-1"),
            (" my generic pass ", "my generic pass"),
            ("abcdefghijklmno", "abcdefghijklmno"),
            ("abcdefghijklmnopq", "abcdefghijklmnopq"),
            ("abc-defgh-ijkl-mnop", "abc-defgh-ijkl-mnop"),
            ("abcd-efgh-ijkl-mno1", "abcd-efgh-ijkl-mno1"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(normalise(input), want, "normalise({input:?})");
        }
    }

    #[test]
    fn app_password_format() {
        assert!(looks_like_app_password("abcd-efgh-ijkl-mnop"));
        for s in [
            "Correct-Horse-1",
            "ABCD-EFGH-IJKL-MNOP",
            "abcdefghijklmnop",
            "abcd-efgh-ijkl-mnop ",
            "abcd-efgh-ijkl-mnöp",
            "abcd_efgh_ijkl_mnop",
            "",
        ] {
            assert!(!looks_like_app_password(s), "{s:?}");
        }
        assert!(!looks_like_app_password(&normalise("Correct-Horse-1")));
        assert!(looks_like_app_password(&normalise("ABCD EFGH IJKL MNOP")));
    }

    #[test]
    fn secret_is_redacted() {
        let s = Secret::new("abcd-efgh-ijkl-mnop".into());
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(format!("{s:?}"), "<redacted>");
        let c = Credential {
            secret: s,
            source: CredentialSource::Vault,
            set_at: None,
        };
        assert!(!format!("{c:?}").contains("abcd"));
    }

    #[test]
    fn source_names() {
        assert_eq!(CredentialSource::Vault.to_string(), "vault");
        assert_eq!(CredentialSource::File.to_string(), "password_file");
        assert_eq!(CredentialSource::Command.to_string(), "password_command");
        assert_eq!(
            CredentialSource::Env.to_string(),
            "ICLOUD_BRIDGE_APP_PASSWORD"
        );
    }

    struct Setup {
        dir: tempfile::TempDir,
        vault: Vault,
        account: AccountConfig,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(&dir.path().join("data"));
        let account = AccountConfig {
            name: "alice".into(),
            apple_id: "alice@icloud.com".into(),
            password_file: None,
            password_command: None,
        };
        Setup {
            dir,
            vault,
            account,
        }
    }

    fn get(s: &Setup, env: Option<&str>) -> Option<Credential> {
        resolve_with(
            &s.account,
            &s.vault,
            env.map(str::to_string),
            COMMAND_TIMEOUT,
        )
        .unwrap()
    }

    #[test]
    fn resolve_order() {
        let mut s = setup();
        assert!(get(&s, None).is_none());

        let c = get(&s, Some(" EEEE EEEE EEEE EEEE\n")).unwrap();
        assert_eq!(c.source, CredentialSource::Env);
        assert_eq!(c.secret.expose(), "eeee-eeee-eeee-eeee");
        assert!(c.set_at.is_none());

        s.account.password_command = Some("printf 'cccc cccc cccc cccc\\n'".into());
        let c = get(&s, Some("eeee-eeee-eeee-eeee")).unwrap();
        assert_eq!(c.source, CredentialSource::Command);
        assert_eq!(c.secret.expose(), "cccc-cccc-cccc-cccc");

        let file = s.dir.path().join("pw");
        std::fs::write(&file, "FFFFFFFFFFFFFFFF\n").unwrap();
        s.account.password_file = Some(file);
        let c = get(&s, Some("eeee-eeee-eeee-eeee")).unwrap();
        assert_eq!(c.source, CredentialSource::File);
        assert_eq!(c.secret.expose(), "ffff-ffff-ffff-ffff");
        assert!(c.set_at.is_some());

        s.vault
            .set("alice", &Secret::new("vvvv-vvvv-vvvv-vvvv".into()))
            .unwrap();
        let c = get(&s, Some("eeee-eeee-eeee-eeee")).unwrap();
        assert_eq!(c.source, CredentialSource::Vault);
        assert_eq!(c.secret.expose(), "vvvv-vvvv-vvvv-vvvv");
        assert!(c.set_at.is_some());

        // Another account's vault entry does not count.
        s.account.name = "bob".into();
        assert_eq!(
            get(&s, None).unwrap().source,
            CredentialSource::File,
            "bob has no vault entry"
        );
    }

    #[test]
    fn env_only_for_a_single_account() {
        let s = setup();
        // The public entry point with single_account = false never reads the environment.
        assert!(resolve(&s.account, &s.vault, false).unwrap().is_none());
        assert!(get(&s, Some("")).is_none());
        assert!(get(&s, Some("   ")).is_none());
    }

    #[test]
    fn command_failure_hides_output() {
        let mut s = setup();
        s.account.password_command =
            Some("echo sekr-etse-kret-sekr; echo diagnostic-on-stderr >&2; exit 3".into());
        let err = resolve_with(&s.account, &s.vault, None, COMMAND_TIMEOUT).unwrap_err();
        let shown = format!("{err} / {err:?}");
        assert!(!shown.contains("sekr"), "{shown}");
        assert!(shown.contains("password_command"), "{shown}");
        assert!(shown.contains('3'), "{shown}");
        assert!(shown.contains("alice"), "{shown}");
    }

    #[test]
    fn command_timeout_and_empty_output() {
        let mut s = setup();
        s.account.password_command = Some("sleep 5; echo late".into());
        let start = Instant::now();
        let err = resolve_with(&s.account, &s.vault, None, Duration::from_millis(300)).unwrap_err();
        assert!(
            matches!(err, CredentialError::CommandTimeout { .. }),
            "{err}"
        );
        assert!(start.elapsed() < Duration::from_secs(3));

        s.account.password_command = Some("true".into());
        let err = resolve_with(&s.account, &s.vault, None, COMMAND_TIMEOUT).unwrap_err();
        assert!(matches!(err, CredentialError::CommandEmpty { .. }), "{err}");
    }

    #[test]
    fn file_errors_name_the_source() {
        let mut s = setup();
        let file = s.dir.path().join("missing");
        s.account.password_file = Some(file.clone());
        let err = get_err(&s);
        assert!(err.contains("password_file"), "{err}");
        assert!(err.contains("missing"), "{err}");

        std::fs::write(&file, "  \n").unwrap();
        let err = get_err(&s);
        assert!(err.contains("empty"), "{err}");
    }

    fn get_err(s: &Setup) -> String {
        resolve_with(&s.account, &s.vault, None, COMMAND_TIMEOUT)
            .unwrap_err()
            .to_string()
    }
}
