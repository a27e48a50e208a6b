//! Room access tokens end to end: `serve --auth-secret` over real
//! WebSocket and HTTP connections, `switchboard token`, and interop with an
//! independent JWT library (PyJWT, Debian's python3-jwt, which tests/run.sh
//! installs).

use futures_util::SinkExt;
use serde_json::{json, Value};
mod common;

use common::{http_get_with, next_json, InProcess};
use signal::{RoomAuth, RoomClaims};
use std::process::Command;
use tokio::net::TcpStream as TokioTcp;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const SECRET: &str = "integration-test-secret-0123456789";

type Ws = WebSocketStream<MaybeTlsStream<TokioTcp>>;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(room: &str) -> RoomClaims {
    RoomClaims {
        room: room.into(),
        peer: None,
        exp: now() + 600,
        nbf: None,
        iat: None,
        turn: None,
    }
}

fn mint(c: RoomClaims) -> String {
    RoomAuth::new(SECRET.as_bytes()).mint(&c)
}

fn server() -> InProcess {
    InProcess::start(&["--auth-secret", SECRET])
}

async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

async fn ask(ws: &mut Ws, frame: Value) -> Value {
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
    next_json(ws).await
}

fn code(v: &Value) -> &str {
    assert_eq!(v["type"], "error", "{v}");
    v["code"].as_str().unwrap()
}

/// Every URL of an `iceServers` list.
fn urls(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["urls"].as_array().unwrap().clone())
        .map(|u| u.as_str().unwrap().to_string())
        .collect()
}

fn has_turn(list: &Value) -> bool {
    urls(list).iter().any(|u| u.starts_with("turn:"))
}

#[tokio::test]
async fn joins_are_refused_without_a_valid_token() {
    let s = server();
    let mut ws = connect(&s.url()).await;
    let join = |token: Option<&str>, peer: Option<&str>| {
        let mut j = json!({"type":"join","room":"team-a"});
        if let Some(t) = token {
            j["token"] = t.into();
        }
        if let Some(p) = peer {
            j["peer"] = p.into();
        }
        j
    };
    assert_eq!(code(&ask(&mut ws, join(None, None)).await), "unauthorized");
    let forged = RoomAuth::new(b"some-other-secret-0123456789").mint(&claims("team-a"));
    assert_eq!(
        code(&ask(&mut ws, join(Some(&forged), None)).await),
        "unauthorized"
    );
    let wrong_room = mint(claims("team-b"));
    assert_eq!(
        code(&ask(&mut ws, join(Some(&wrong_room), None)).await),
        "unauthorized"
    );
    // Past exp by more than the default leeway (30 s).
    let expired = mint(RoomClaims {
        exp: now() - 100,
        ..claims("team-a")
    });
    assert_eq!(
        code(&ask(&mut ws, join(Some(&expired), None)).await),
        "token-expired"
    );
    let early = mint(RoomClaims {
        nbf: Some(now() + 300),
        ..claims("team-a")
    });
    let v = ask(&mut ws, join(Some(&early), None)).await;
    assert_eq!(code(&v), "unauthorized");
    assert!(v["message"].as_str().unwrap().contains("nbf"), "{v}");
    let alice = mint(RoomClaims {
        peer: Some("alice".into()),
        ..claims("team-a")
    });
    assert_eq!(
        code(&ask(&mut ws, join(Some(&alice), Some("mallory"))).await),
        "peer-not-allowed"
    );
    // The connection survived every refusal; the peer claim becomes the id.
    let w = ask(&mut ws, join(Some(&alice), None)).await;
    assert_eq!(w["type"], "welcome", "{w}");
    assert_eq!(w["peer"], "alice");
    assert!(has_turn(&w["iceServers"]), "{w}");
}

#[tokio::test]
async fn prefix_tokens_turn_false_and_url_tokens() {
    let s = server();
    // A prefix token opens any room under it.
    let team = mint(claims("team-*"));
    let mut a = connect(&s.url()).await;
    let w = ask(
        &mut a,
        json!({"type":"join","room":"team-red","peer":"a","token":team}),
    )
    .await;
    assert_eq!(w["type"], "welcome", "{w}");
    assert!(has_turn(&w["iceServers"]));
    // turn:false: STUN still, TURN gone (welcome lists STUN and TURN
    // otherwise, as above).
    let no_turn = mint(RoomClaims {
        turn: Some(false),
        ..claims("team-red")
    });
    let mut b = connect(&s.url()).await;
    let w = ask(
        &mut b,
        json!({"type":"join","room":"team-red","peer":"b","token":no_turn}),
    )
    .await;
    assert_eq!(w["type"], "welcome", "{w}");
    assert!(!has_turn(&w["iceServers"]), "{w}");
    assert!(
        urls(&w["iceServers"])
            .iter()
            .any(|u| u.starts_with("stun:")),
        "{w}"
    );
    assert!(!w["iceServers"].to_string().contains("credential"), "{w}");
    // ?token= on the URL, for a join that carries none.
    let mut c = connect(&format!("{}?token={team}", s.url())).await;
    let w = ask(&mut c, json!({"type":"join","room":"team-blue"})).await;
    assert_eq!(w["type"], "welcome", "{w}");
    let mut d = connect(&format!("{}?token={team}", s.url())).await;
    assert_eq!(
        code(&ask(&mut d, json!({"type":"join","room":"blue"})).await),
        "unauthorized"
    );
    // A query that is not even well-formed counts as no token.
    let mut e = connect(&format!("{}?token=%zz&x", s.url())).await;
    assert_eq!(
        code(&ask(&mut e, json!({"type":"join","room":"team-blue"})).await),
        "unauthorized"
    );
}

#[tokio::test]
async fn a_resume_needs_no_token_and_keeps_turn_false() {
    let s = server();
    let no_turn = mint(RoomClaims {
        turn: Some(false),
        ..claims("r")
    });
    let mut ws = connect(&s.url()).await;
    let w = ask(
        &mut ws,
        json!({"type":"join","room":"r","peer":"p","token":no_turn}),
    )
    .await;
    assert_eq!(w["type"], "welcome", "{w}");
    let session = w["session"].as_str().unwrap().to_string();
    // The socket dies without a close frame: the session waits for a
    // resume.
    drop(ws);
    let mut again = connect(&s.url()).await;
    let r = ask(
        &mut again,
        json!({"type":"resume","session":session,"seq":0}),
    )
    .await;
    assert_eq!(r["type"], "resumed", "{r}");
    assert_eq!(r["peer"], "p");
    assert!(!has_turn(&r["iceServers"]), "{r}");
}

#[test]
fn ice_servers_need_a_bearer_token() {
    let s = server();
    let (status, head, body) = http_get_with(s.addr, "/v1/ice-servers", "");
    assert_eq!(status, 401, "{body}");
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "unauthorized", "{v}");
    let forged = RoomAuth::new(b"some-other-secret-0123456789").mint(&claims("r"));
    let (status, _, body) = http_get_with(
        s.addr,
        "/v1/ice-servers",
        &format!("Authorization: Bearer {forged}\r\n"),
    );
    assert_eq!(status, 401, "{body}");
    let expired = mint(RoomClaims {
        exp: now() - 100,
        ..claims("r")
    });
    let (status, _, body) = http_get_with(
        s.addr,
        "/v1/ice-servers",
        &format!("Authorization: Bearer {expired}\r\n"),
    );
    assert_eq!(status, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "token-expired"
    );
    // Any room's valid token will do.
    let (status, _, body) = http_get_with(
        s.addr,
        "/v1/ice-servers",
        &format!("Authorization: Bearer {}\r\n", mint(claims("any-room"))),
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(has_turn(&v["iceServers"]), "{v}");
    let no_turn = mint(RoomClaims {
        turn: Some(false),
        ..claims("r")
    });
    let (status, _, body) = http_get_with(
        s.addr,
        "/v1/ice-servers",
        &format!("authorization: bearer {no_turn}\r\n"),
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(!has_turn(&v["iceServers"]), "{v}");
    // Without --auth-secret nothing is asked for.
    let open = InProcess::start(&[]);
    let (status, _, _) = http_get_with(open.addr, "/v1/ice-servers", "");
    assert_eq!(status, 200);
}

/// A Python 3 with PyJWT (`import jwt`): `$SWITCHBOARD_PYTHON`, else
/// Debian's /usr/bin/python3 (where python3-jwt installs), else `python3`.
/// Missing is a failure, not a skip: tests/run.sh installs python3-jwt.
fn python_with_jwt() -> String {
    let candidates: Vec<String> = std::env::var("SWITCHBOARD_PYTHON")
        .into_iter()
        .chain(["/usr/bin/python3".to_string(), "python3".to_string()])
        .collect();
    for py in &candidates {
        let ok = Command::new(py)
            .args(["-c", "import jwt"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return py.clone();
        }
    }
    panic!(
        "no Python with PyJWT among {candidates:?}: apt-get install python3-jwt \
         (tests/run.sh does), or set SWITCHBOARD_PYTHON"
    );
}

fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new(python_with_jwt())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn tokens_minted_by_pyjwt_are_accepted() {
    let s = server();
    let mint_py = r#"
import sys, time, jwt
secret, room, peer, turn = sys.argv[1:5]
claims = {"room": room, "exp": int(time.time()) + 600}
if peer:
    claims["peer"] = peer
if turn == "false":
    claims["turn"] = False
print(jwt.encode(claims, secret, algorithm="HS256"))
"#;
    let token = python(mint_py, &[SECRET, "py-*", "carol", "false"]);
    let mut ws = connect(&s.url()).await;
    let w = ask(
        &mut ws,
        json!({"type":"join","room":"py-room","token":token}),
    )
    .await;
    assert_eq!(w["type"], "welcome", "{w}");
    assert_eq!(w["peer"], "carol");
    assert!(!has_turn(&w["iceServers"]), "{w}");
    // And one signed with another secret is not.
    let bad = python(mint_py, &["not-the-server-secret-012345", "py-*", "", ""]);
    let mut ws = connect(&s.url()).await;
    assert_eq!(
        code(&ask(&mut ws, json!({"type":"join","room":"py-room","token":bad})).await),
        "unauthorized"
    );
}

#[test]
fn switchboard_token_output_decodes_with_pyjwt() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["token", "--secret", SECRET, "--room", "team-*"])
        .args(["--peer", "dave", "--ttl", "2h", "--no-turn"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    assert_eq!(token.lines().count(), 1, "one token, one line: {token:?}");
    let decoded = python(
        r#"
import sys, json, jwt
print(json.dumps(jwt.decode(sys.argv[2], sys.argv[1], algorithms=["HS256"])))
"#,
        &[SECRET, token.trim()],
    );
    let c: Value = serde_json::from_str(&decoded).unwrap();
    assert_eq!(c["room"], "team-*");
    assert_eq!(c["peer"], "dave");
    assert_eq!(c["turn"], false);
    let exp = c["exp"].as_u64().unwrap();
    let iat = c["iat"].as_u64().unwrap();
    assert_eq!(exp - iat, 7200);
    assert!(iat.abs_diff(now()) < 60, "{c}");
    // The secret from a file, and the env var, give tokens the same way;
    // without any secret it is a usage error.
    let dir = std::env::temp_dir().join(format!("sb-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["token", "--room", "r", "--secret-file"])
        .arg(&file)
        .env_remove("SWITCHBOARD_AUTH_SECRET")
        .output()
        .unwrap();
    assert!(out.status.success());
    let t = String::from_utf8(out.stdout).unwrap();
    let c: Value = serde_json::from_str(&python(
        r#"
import sys, json, jwt
print(json.dumps(jwt.decode(sys.argv[2], sys.argv[1], algorithms=["HS256"])))
"#,
        &[SECRET, t.trim()],
    ))
    .unwrap();
    assert_eq!(c["room"], "r");
    assert!(c.get("turn").is_none() && c.get("peer").is_none(), "{c}");
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["token", "--room", "r"])
        .env_remove("SWITCHBOARD_AUTH_SECRET")
        .env_remove("SWITCHBOARD_AUTH_SECRET_FILE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--secret"));
}

#[test]
fn the_cli_sends_its_token() {
    let s = server();
    let server_url = format!("http://{}", s.addr);
    let echo = |token: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        cmd.args(["echo", "--server", &server_url, "--room", "cli-room"])
            .args(["--json", "--timeout", "5"])
            .env_remove("SWITCHBOARD_TOKEN")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        if let Some(t) = token {
            // Through the environment, as a script would.
            cmd.env("SWITCHBOARD_TOKEN", t);
        }
        cmd.spawn().unwrap()
    };
    let first_event = |child: &mut std::process::Child| -> Value {
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    };
    let mut refused = echo(None);
    let ev = first_event(&mut refused);
    assert_eq!(ev["event"], "error", "{ev}");
    assert_eq!(ev["code"], "unauthorized", "{ev}");
    assert_eq!(refused.wait().unwrap().code(), Some(3));
    let mut expired = echo(Some(&mint(RoomClaims {
        exp: now() - 100,
        ..claims("cli-room")
    })));
    assert_eq!(first_event(&mut expired)["code"], "token-expired");
    assert_eq!(expired.wait().unwrap().code(), Some(3));
    let mut joined = echo(Some(&mint(RoomClaims {
        peer: Some("cli".into()),
        ..claims("cli-*")
    })));
    let ev = first_event(&mut joined);
    assert_eq!(ev["event"], "joined", "{ev}");
    assert_eq!(ev["peer"], "cli", "{ev}");
    let _ = joined.kill();
    let _ = joined.wait();
}
