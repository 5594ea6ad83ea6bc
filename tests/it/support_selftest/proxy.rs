//! Self-test of the fault-injecting proxy (`support::drip`) in front of the mirror.

use super::*;

#[test]
fn fault_proxy_breaks_the_chosen_gets_and_logs_them() {
    use support::drip::{DripProxy, Fault as ProxyFault, FaultRule};
    use support::registry::http_request;
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    fs::write(dir.path().join("f"), &data).unwrap();
    let mirror = Mirror::start(dir.path());
    let proxy = DripProxy::start(mirror.addr());
    let host = proxy.host();
    let get = |range: Option<&str>| {
        let headers: Vec<(&str, &str)> = range.map(|r| ("Range", r)).into_iter().collect();
        http_request("GET", &host, "/f", &headers)
    };

    proxy.fault(FaultRule::containing("/f", ProxyFault::Status(503)).times(1));
    assert_eq!(get(None).unwrap().status, 503);
    assert_eq!(mirror.total_gets(), 0, "an injected status does not ask the backend");
    assert_eq!(get(None).unwrap().body, data, "the rule was used up");

    proxy.fault(FaultRule::containing("/f", ProxyFault::Truncate).times(1));
    let e = get(None).unwrap_err().to_string();
    assert!(e.contains("body has 500 of 1000 bytes"), "{e}");
    proxy.fault(FaultRule::containing("/f", ProxyFault::ResetMidBody).times(1));
    assert!(get(None).is_err(), "a reset body cannot be read to its end");

    proxy.fault(FaultRule::containing("/f", ProxyFault::Corrupt).times(2));
    let mut flipped = data.clone();
    flipped[500] ^= 0xff;
    assert_eq!(get(None).unwrap().body, flipped);
    let r = get(Some("bytes=400-")).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (206, &flipped[400..]));

    let log: Vec<(u16, Option<ProxyFault>, Option<String>)> = proxy
        .requests()
        .into_iter()
        .map(|r| (r.status, r.fault, r.range))
        .collect();
    assert_eq!(
        log,
        [
            (503, Some(ProxyFault::Status(503)), None),
            (200, None, None),
            (200, Some(ProxyFault::Truncate), None),
            (200, Some(ProxyFault::ResetMidBody), None),
            (200, Some(ProxyFault::Corrupt), None),
            (206, Some(ProxyFault::Corrupt), Some("bytes=400-".to_string())),
        ]
    );
}
