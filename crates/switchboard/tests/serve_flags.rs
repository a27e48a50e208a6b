//! The README's `switchboard serve` flag table says what `serve --help` of
//! the real binary says: the same flags, each with the same default.

use std::collections::BTreeMap;
use std::process::Command;

/// What a flag's default cell or `[default: …]` says; `None` for no default.
#[derive(Debug, PartialEq)]
struct Flag {
    default: Option<String>,
    takes_value: bool,
}

/// Splits a Markdown table row into cells, keeping `\|` inside a cell.
fn cells(row: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = row.trim().trim_start_matches('|').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                out.last_mut().unwrap().push(chars.next().unwrap())
            }
            '|' => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out.iter().map(|c| c.trim().to_string()).collect()
}

fn readme_flags() -> BTreeMap<String, Flag> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    let text = std::fs::read_to_string(path).unwrap();
    let section = text
        .split_once("### `switchboard serve` flags\n")
        .expect("README has the serve flag section")
        .1;
    let mut flags = BTreeMap::new();
    let rows = section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2); // header and separator
    for row in rows {
        let cells = cells(row);
        let usage = cells[0].trim_matches('`');
        let mut words = usage.split_whitespace();
        let name = words.next().unwrap().to_string();
        assert!(name.starts_with("--"), "README row without a flag: {row}");
        let default = cells[1].replace('`', "");
        let flag = Flag {
            default: (default != "none" && default != "off").then_some(default.clone()),
            takes_value: words.next().is_some(),
        };
        if default == "off" {
            assert!(!flag.takes_value, "`off` is for switches only: {row}");
        }
        assert!(
            flags.insert(name, flag).is_none(),
            "README lists a flag twice: {row}"
        );
    }
    assert!(
        flags.len() > 20,
        "README table not found or cut short: {flags:?}"
    );
    flags
}

fn help_flags() -> BTreeMap<String, Flag> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.args(["serve", "--help"]);
    // Environment values show up in --help; keep them out of the picture.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SWITCHBOARD_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut flags = BTreeMap::new();
    let mut current: Option<(String, bool, String)> = None;
    let mut finish = |c: Option<(String, bool, String)>| {
        if let Some((name, takes_value, body)) = c {
            let default = body.split_once("[default: ").map(|(_, rest)| {
                rest.split_once(']')
                    .expect("closed [default: …]")
                    .0
                    .to_string()
            });
            flags.insert(
                name,
                Flag {
                    default,
                    takes_value,
                },
            );
        }
    };
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('-') && line.starts_with("  ") {
            finish(current.take());
            let mut words = t.split_whitespace().skip_while(|w| !w.starts_with("--"));
            let name = words.next().unwrap().trim_end_matches(',').to_string();
            let takes_value = words.next().is_some_and(|w| w.starts_with('<'));
            current = Some((name, takes_value, String::new()));
        } else if let Some((_, _, body)) = &mut current {
            body.push_str(t);
            body.push(' ');
        }
    }
    finish(current);
    flags.remove("--help").expect("--help is listed");
    flags
}

#[test]
fn readme_flag_table_matches_serve_help() {
    let readme = readme_flags();
    let help = help_flags();
    let names = |m: &BTreeMap<String, Flag>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&readme), names(&help), "README flags vs serve --help");
    for (name, h) in &help {
        assert_eq!(&readme[name], h, "{name}: README vs serve --help");
    }
    // The parse found real defaults, not only blanks.
    assert_eq!(help["--listen"].default.as_deref(), Some("0.0.0.0:8080"));
    assert_eq!(
        help["--relay-bandwidth"].default.as_deref(),
        Some("67108864")
    );
    assert_eq!(
        help["--no-turn"],
        Flag {
            default: None,
            takes_value: false
        }
    );
}
