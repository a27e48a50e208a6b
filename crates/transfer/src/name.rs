//! File names that come from the network.
//!
//! A peer chooses the `name` in `file-start`; we must never let it pick the
//! directory, escape the output directory, hide a file, or produce a name the
//! local filesystem (Linux, macOS or Windows) rejects.

/// Longest sanitized name, in bytes. Leaves room under the usual 255-byte
/// limit for a ` (NNNN)` collision suffix and for the temporary-file wrapper
/// (`.NAME.TAG.part`).
pub const MAX_NAME_BYTES: usize = 200;

/// Used when nothing usable is left of the peer's name.
const FALLBACK: &str = "file";

/// Turns a peer-supplied file name into a safe single path component.
///
/// - Only the last `/`- or `\`-separated component is kept (`../../etc/passwd`
///   becomes `passwd`, `C:\x` becomes `x`).
/// - Control characters (NUL included), bidi overrides (which can disguise an
///   extension) and characters Windows forbids (`<>:"|?*`) become `_`.
/// - Leading dots and whitespace are dropped, so `..` and `.` vanish and no
///   received file is hidden; this also keeps every final name distinct from
///   the receiver's temporary names, which start with a dot. Trailing dots and
///   whitespace are dropped because Windows silently strips them.
/// - Windows device names (`CON`, `nul.txt`, `COM1`, ...) get a `_` prefix.
/// - The result is at most [`MAX_NAME_BYTES`] bytes, keeping a short extension.
/// - Whatever ends up empty becomes `file`.
pub fn sanitize_name(raw: &str) -> String {
    let last = raw
        .rsplit(['/', '\\'])
        .find(|s| !s.trim().is_empty())
        .unwrap_or("");
    let mapped: String = last
        .chars()
        .map(|c| if is_unsafe(c) { '_' } else { c })
        .collect();
    let trimmed = mapped
        .trim_start_matches(|c: char| c == '.' || c.is_whitespace())
        .trim_end_matches(|c: char| c == '.' || c.is_whitespace());
    let mut name = if trimmed.is_empty() {
        FALLBACK.to_owned()
    } else {
        trimmed.to_owned()
    };
    if is_windows_device(&name) {
        name.insert(0, '_');
    }
    truncate(name)
}

fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*')
        // LRE..RLO, LRI..PDI, LRM/RLM, ALM: invisible direction controls.
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

fn is_windows_device(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or("").trim_end();
    let upper = stem.to_ascii_uppercase();
    matches!(upper.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || (upper.len() == 4
            && (upper.starts_with("COM") || upper.starts_with("LPT"))
            && matches!(upper.as_bytes()[3], b'1'..=b'9'))
}

/// Splits `name` into stem and extension (with its dot) at the last dot.
/// Sanitized names never start with a dot, so a dot at index 0 is no
/// extension anyway.
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    }
}

fn truncate(name: String) -> String {
    if name.len() <= MAX_NAME_BYTES {
        return name;
    }
    // A long "extension" is really part of the name; don't let it eat the stem.
    let (stem, ext) = match split_ext(&name) {
        (stem, ext) if ext.len() <= 16 => (stem, ext),
        _ => (name.as_str(), ""),
    };
    let budget = MAX_NAME_BYTES - ext.len();
    let mut cut = budget.min(stem.len());
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    let stem = stem[..cut].trim_end_matches(|c: char| c == '.' || c.is_whitespace());
    let stem = if stem.is_empty() { FALLBACK } else { stem };
    format!("{stem}{ext}")
}

/// Deepest folder nesting a received path may have.
pub const MAX_PATH_DEPTH: usize = 32;

/// Why a peer's relative path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsafe path {path:?}: {why}")]
pub struct UnsafePath {
    /// The path as the peer sent it.
    pub path: String,
    /// What is wrong with it, for the message.
    pub why: &'static str,
}

/// Checks a peer's `file-start` `path` (`dir/sub/name`) and returns its
/// components, or refuses it. Unlike [`sanitize_name`], nothing is
/// repaired: a path that needs repair is hostile or broken, and guessing
/// where it was meant to go could put a file somewhere else than the
/// sender and the user expect. Refused:
/// - an empty path, a leading `/` (absolute), any `\` or `:` (Windows
///   separators, drive letters, alternate streams);
/// - empty, `.` and `..` components (`a//b`, `./a`, `a/../../b`);
/// - a component that [`sanitize_name`] would change: control and bidi
///   characters, characters Windows forbids, a leading dot (hidden files),
///   trailing dots or spaces, device names (`con`, `aux.txt`), over
///   [`MAX_NAME_BYTES`];
/// - more than [`MAX_PATH_DEPTH`] components.
pub fn check_relative_path(raw: &str) -> Result<Vec<&str>, UnsafePath> {
    let refuse = |why| {
        Err(UnsafePath {
            path: raw.to_owned(),
            why,
        })
    };
    if raw.is_empty() {
        return refuse("empty");
    }
    if raw.starts_with('/') {
        return refuse("absolute");
    }
    if raw.contains('\\') || raw.contains(':') {
        return refuse("contains \\ or : (a Windows path or drive)");
    }
    let parts: Vec<&str> = raw.split('/').collect();
    if parts.len() > MAX_PATH_DEPTH {
        return refuse("too deep");
    }
    for part in &parts {
        match *part {
            "" => return refuse("empty component"),
            "." | ".." => return refuse("a . or .. component"),
            p if sanitize_name(p) != p => {
                return refuse("a component that is not a safe file name")
            }
            _ => {}
        }
    }
    Ok(parts)
}

/// The `n`th candidate for a final name: `n == 0` is `name` itself, then
/// `stem (1).ext`, `stem (2).ext`, ... like browsers' download folders.
pub(crate) fn numbered(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_owned();
    }
    let (stem, ext) = split_ext(name);
    format!("{stem} ({n}){ext}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering() {
        assert_eq!(numbered("a.txt", 0), "a.txt");
        assert_eq!(numbered("a.txt", 1), "a (1).txt");
        assert_eq!(numbered("archive.tar.gz", 2), "archive.tar (2).gz");
        assert_eq!(numbered("README", 3), "README (3)");
    }

    #[test]
    fn relative_paths() {
        for ok in ["a.txt", "photos/2024/a.jpg", "données/été/ü.txt", "a b/c d"] {
            assert_eq!(check_relative_path(ok).unwrap().join("/"), ok, "{ok}");
        }
        for bad in [
            "",
            "../x",
            "/etc/x",
            "C:\\x",
            "C:/x",
            "a/../../b",
            "a//b",
            "./a",
            "a/.",
            "a/",
            "a\\b",
            "a/.hidden",
            "con/x",
            "a/aux.txt",
            "a/b. ",
            "a/\u{202E}gpj.exe",
            "a/\0b",
        ] {
            assert!(check_relative_path(bad).is_err(), "{bad:?} was accepted");
        }
        let deep = vec!["d"; MAX_PATH_DEPTH + 1].join("/");
        assert!(check_relative_path(&deep).is_err());
        let deepest = vec!["d"; MAX_PATH_DEPTH].join("/");
        assert!(check_relative_path(&deepest).is_ok());
    }

    #[test]
    fn devices() {
        assert_eq!(sanitize_name("CON"), "_CON");
        assert_eq!(sanitize_name("nul.txt"), "_nul.txt");
        assert_eq!(sanitize_name("com7"), "_com7");
        assert_eq!(sanitize_name("COM0"), "COM0");
        assert_eq!(sanitize_name("console"), "console");
    }
}
