//! Bearer-token authentication of the HTTP endpoints a worker serves (the ingress, the admin
//! endpoints that expose data): `Authorization: Bearer <token>` against the tokens of a spec's
//! [`HttpAuth`] — from an environment variable (read at start) or a file (re-read when it
//! changes, so a mounted Secret rotates without a restart).
//!
//! Tokens are kept as SHA-256 digests and a presented token is compared with every one of them
//! in constant time, so neither the answer's timing nor its length tells how close a guess was.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use spindle_spec::HttpAuth;

/// How often a tokens file is looked at (one `stat`) for changes.
const RECHECK: Duration = Duration::from_secs(1);

type Digest = [u8; 32];

fn digest(token: &[u8]) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// Equal in constant time (both are digests: the same length).
fn same(a: &Digest, b: &Digest) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The tokens of a text: one per line, blank lines and `#` comments ignored.
pub(crate) fn parse_tokens(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Why a request is not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No `Authorization` header: 401.
    Missing,
    /// An `Authorization` header that is not `Bearer <token>`: 401.
    Malformed,
    /// A token that is not accepted: 403.
    Rejected,
}

/// Checks an `Authorization` header against `accepted` (pure).
pub(crate) fn check(authorization: Option<&HeaderValue>, accepted: &[Digest]) -> Result<(), Denied> {
    let value = authorization.ok_or(Denied::Missing)?;
    let value = value.to_str().map_err(|_| Denied::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(Denied::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(Denied::Malformed);
    }
    let presented = digest(token.as_bytes());
    // Every token is compared, whatever matched: the time does not depend on which one did.
    let found = accepted.iter().fold(false, |found, t| found | same(t, &presented));
    if found { Ok(()) } else { Err(Denied::Rejected) }
}

impl Denied {
    /// The answer: 401 or 403, `WWW-Authenticate` (RFC 6750) and a sentence naming the reason
    /// (never a token).
    pub(crate) fn response(self, realm: &str) -> Response {
        let (status, challenge, text) = match self {
            Denied::Missing => (
                StatusCode::UNAUTHORIZED,
                format!("Bearer realm=\"{realm}\""),
                "this endpoint needs `Authorization: Bearer <token>`",
            ),
            Denied::Malformed => (
                StatusCode::UNAUTHORIZED,
                format!("Bearer realm=\"{realm}\", error=\"invalid_request\""),
                "the Authorization header is not `Bearer <token>`",
            ),
            Denied::Rejected => (
                StatusCode::FORBIDDEN,
                format!("Bearer realm=\"{realm}\", error=\"invalid_token\""),
                "the bearer token is not one this endpoint accepts",
            ),
        };
        (status, [(header::WWW_AUTHENTICATE, challenge)], format!("{text}\n")).into_response()
    }

    pub(crate) fn kind(self) -> &'static str {
        match self {
            Denied::Missing => "unauthenticated",
            Denied::Malformed => "bad_authorization",
            Denied::Rejected => "forbidden",
        }
    }
}

/// A configuration problem found at start.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("{at}: environment variable {env} (the tokens) is not set")]
    Unset { at: String, env: String },
    #[error("{at}: cannot read the tokens file {path}: {reason}")]
    File { at: String, path: String, reason: String },
    #[error("{at}: no tokens (every line is blank or a comment): nobody could get in")]
    Empty { at: String },
}

/// The accepted tokens of one endpoint.
pub struct Tokens {
    source: Source,
    current: Mutex<Current>,
}

enum Source {
    Fixed,
    File { path: PathBuf, at: String },
}

struct Current {
    digests: Vec<Digest>,
    checked: Instant,
    stamp: Option<(SystemTime, u64)>,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Tokens {
    /// Loads `auth` (`at` names it in errors: a field path); relative files start at `base_dir`.
    pub(crate) fn load(auth: &HttpAuth, at: &str, base_dir: &Path) -> Result<Tokens, AuthConfigError> {
        let (source, text) = match (&auth.tokens, &auth.tokens_file) {
            (Some(s), _) => {
                let text = std::env::var(&s.env).map_err(|_| AuthConfigError::Unset {
                    at: at.to_string(),
                    env: s.env.clone(),
                })?;
                (Source::Fixed, text)
            }
            (None, Some(f)) => {
                let path = base_dir.join(f);
                let text = std::fs::read_to_string(&path).map_err(|e| AuthConfigError::File {
                    at: at.to_string(),
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                (
                    Source::File {
                        path,
                        at: at.to_string(),
                    },
                    text,
                )
            }
            (None, None) => (Source::Fixed, String::new()),
        };
        let digests: Vec<Digest> = parse_tokens(&text).into_iter().map(|t| digest(t.as_bytes())).collect();
        if digests.is_empty() {
            return Err(AuthConfigError::Empty { at: at.to_string() });
        }
        let stamp = match &source {
            Source::File { path, .. } => stamp(path),
            Source::Fixed => None,
        };
        Ok(Tokens {
            source,
            current: Mutex::new(Current {
                digests,
                checked: Instant::now(),
                stamp,
            }),
        })
    }

    /// Lets a request in, or says why not.
    pub(crate) fn admit(&self, headers: &HeaderMap) -> Result<(), Denied> {
        let mut current = self.current.lock().expect("token lock");
        if let Source::File { path, at } = &self.source
            && current.checked.elapsed() >= RECHECK
        {
            current.checked = Instant::now();
            let now = stamp(path);
            if now != current.stamp {
                // A file being replaced may be unreadable or empty for a moment: keep the
                // tokens in force until a complete new set is there.
                match std::fs::read_to_string(path) {
                    Ok(text) => {
                        let digests: Vec<Digest> =
                            parse_tokens(&text).into_iter().map(|t| digest(t.as_bytes())).collect();
                        if digests.is_empty() {
                            tracing::warn!(%at, path = %path.display(), "the tokens file holds no tokens; keeping the previous ones");
                        } else {
                            tracing::info!(%at, tokens = digests.len(), "tokens file changed; reloaded");
                            current.digests = digests;
                            current.stamp = now;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%at, path = %path.display(), error = %e, "cannot read the tokens file; keeping the previous tokens")
                    }
                }
            }
        }
        check(headers.get(header::AUTHORIZATION), &current.digests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_checked() {
        let accepted = vec![digest(b"alpha"), digest(b"beta")];
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(check(Some(&h("Bearer alpha")), &accepted), Ok(()));
        assert_eq!(check(Some(&h("bearer beta")), &accepted), Ok(()));
        assert_eq!(check(None, &accepted), Err(Denied::Missing));
        assert_eq!(check(Some(&h("Basic YWxwaGE6")), &accepted), Err(Denied::Malformed));
        assert_eq!(check(Some(&h("Bearer")), &accepted), Err(Denied::Malformed));
        assert_eq!(check(Some(&h("Bearer ")), &accepted), Err(Denied::Malformed));
        assert_eq!(check(Some(&h("Bearer alph")), &accepted), Err(Denied::Rejected));
        assert_eq!(check(Some(&h("Bearer alphaa")), &accepted), Err(Denied::Rejected));
        assert_eq!(parse_tokens("# clients\n\n alpha \nbeta\n#old\n"), ["alpha", "beta"]);
    }

    #[test]
    fn a_tokens_file_rotates_without_a_restart() {
        let dir = std::env::temp_dir().join(format!("spindle-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tokens");
        std::fs::write(&file, "old\n").unwrap();
        let auth = HttpAuth {
            tokens: None,
            tokens_file: Some(file.display().to_string()),
        };
        let tokens = Tokens::load(&auth, "spec.admin.auth", Path::new("/")).unwrap();
        let with = |t: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
            );
            h
        };
        assert_eq!(tokens.admit(&with("old")), Ok(()));
        std::fs::write(&file, "old\nnew-and-longer\n").unwrap();
        // The next look at the file is at most RECHECK away; force it.
        tokens.current.lock().unwrap().checked -= RECHECK;
        assert_eq!(tokens.admit(&with("new-and-longer")), Ok(()));
        std::fs::write(&file, "# nothing\n").unwrap();
        tokens.current.lock().unwrap().checked -= RECHECK;
        assert_eq!(
            tokens.admit(&with("old")),
            Ok(()),
            "an empty file keeps the tokens in force"
        );
        std::fs::remove_dir_all(&dir).unwrap();

        let err = Tokens::load(
            &HttpAuth {
                tokens: Some(spindle_spec::SecretValue {
                    env: "SPINDLE_TEST_SURELY_UNSET".into(),
                    secret_key_ref: None,
                }),
                tokens_file: None,
            },
            "spec.ingresses[0].http.auth",
            Path::new("/"),
        )
        .err()
        .unwrap();
        assert_eq!(
            err.to_string(),
            "spec.ingresses[0].http.auth: environment variable SPINDLE_TEST_SURELY_UNSET (the tokens) is not set"
        );
    }
}
