//! Link pairing against fixed vectors (`link-vectors.json`): the same
//! file is what the browser's `web/sdk/pairing.js` is tested against, so
//! the two implementations agree byte for byte.

use pairing::{fingerprints, LinkSecret, Pairing, Role, Secret};
use serde_json::Value;

const VECTORS: &str = include_str!("link-vectors.json");

fn field<'a>(msg: &'a Value, name: &str) -> &'a str {
    msg["pair"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {msg}"))
}

#[test]
fn link_pairing_makes_the_recorded_messages() {
    let vectors: Value = serde_json::from_str(VECTORS).unwrap();
    let cases = vectors["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let s = |k: &str| case[k].as_str().unwrap().to_string();
        let link = LinkSecret::parse(&format!("#room={}&key={}", s("room"), s("key"))).unwrap();
        let secret = Secret::Link(link);
        let (host_sdp, guest_sdp) = (s("host_sdp"), s("guest_sdp"));
        let got_fps = (
            fingerprints(&host_sdp).unwrap(),
            fingerprints(&guest_sdp).unwrap(),
        );

        let mut h = Pairing::new(&secret, Role::Host);
        let mut g = Pairing::new(&secret, Role::Guest);
        let (hc, gc) = (h.poll_output().unwrap(), g.poll_output().unwrap());
        h.set_descriptions(&host_sdp, &guest_sdp).unwrap();
        g.set_descriptions(&guest_sdp, &host_sdp).unwrap();
        g.handle(&hc).unwrap();
        h.handle(&gc).unwrap();
        let (hb, gb) = (h.poll_output().unwrap(), g.poll_output().unwrap());
        h.handle(&gb).unwrap();
        g.handle(&hb).unwrap();
        assert!(h.is_verified() && g.is_verified());

        let got = [
            ("host_fp", got_fps.0.as_str()),
            ("guest_fp", got_fps.1.as_str()),
            ("host_check", field(&hc, "check")),
            ("guest_check", field(&gc, "check")),
            ("host_bind", field(&hb, "bind")),
            ("guest_bind", field(&gb, "bind")),
        ];
        for (name, value) in got {
            assert_eq!(value, s(name), "{name} for room {}", s("room"));
        }
    }
}
