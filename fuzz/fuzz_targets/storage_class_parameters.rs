//! StorageClass parameter parsing (`service::parameters::parse_parameters`) on `key=value` lines,
//! on nodes with no pool, one pool, a `default` pool among others, and several pools without one.
//! The answer must not depend on the map's iteration order; the I/O limits and the layout are the
//! ones named.
#![no_main]

use fastvirt_csi::filesystem::FsType;
use fastvirt_csi::qos::LimitKind;
use fastvirt_csi::service::parameters::{SIDECAR_PARAM_PREFIX, parse_parameters};
use fastvirt_fuzz::empty_driver;
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::sync::OnceLock;
use tonic::Code;

fuzz_target!(|text: &str| {
    static DRIVERS: OnceLock<Vec<fastvirt_csi::service::Driver>> = OnceLock::new();
    let drivers = DRIVERS.get_or_init(|| {
        [&[][..], &["fast"], &["default", "nvme"], &["a", "b"]]
            .into_iter()
            .map(empty_driver)
            .collect()
    });
    let parameters: HashMap<String, String> = text
        .lines()
        .map(|line| match line.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (line.to_owned(), String::new()),
        })
        .collect();
    // The same parameters in another iteration order (a new map has a new hasher).
    let reordered: HashMap<String, String> = parameters
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for driver in drivers {
        let parsed = parse_parameters(driver, &parameters);
        let again = parse_parameters(driver, &reordered);
        match (&parsed, &again) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "the result depends on the order of {parameters:?}"),
            (Err(a), Err(b)) => assert_eq!(a.code(), b.code(), "{parameters:?}"),
            _ => {
                panic!("the result depends on the order of {parameters:?}: {parsed:?} / {again:?}")
            }
        }
        let Ok(params) = parsed else {
            let status = parsed.unwrap_err();
            assert!(matches!(
                status.code(),
                Code::InvalidArgument | Code::FailedPrecondition
            ));
            continue;
        };
        for key in parameters.keys() {
            assert!(
                key == "pool"
                    || key == "thin"
                    || key == "layout"
                    || key.eq_ignore_ascii_case("fsType")
                    || LimitKind::from_parameter(key).is_some()
                    || key.starts_with(SIDECAR_PARAM_PREFIX),
                "unknown key {key:?} accepted"
            );
        }
        // The I/O limits are exactly the ones named, each parsed from its own value.
        for kind in LimitKind::ALL {
            let named = parameters.get(kind.parameter());
            let expected = named
                .filter(|v| v.as_str() != "unlimited")
                .map(|v| v.parse::<u64>().expect("an accepted limit is a number"));
            assert_eq!(params.qos.get(kind), expected, "{}", kind.parameter());
        }
        // The layout is the one named, device when none is.
        assert_eq!(
            params.layout.as_str(),
            parameters.get("layout").map_or("device", String::as_str)
        );
        match parameters.get("pool") {
            Some(pool) => assert_eq!(params.pool.as_str(), pool),
            None => assert!(driver.backend(&params.pool).is_some()),
        }
        assert_eq!(
            params.thin,
            parameters.get("thin").is_some_and(|v| v == "true")
        );
        let fs_values: Vec<&String> = parameters
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("fsType"))
            .map(|(_, v)| v)
            .collect();
        match params.fs_type {
            None => assert!(fs_values.is_empty()),
            Some(fs) => assert!(fs_values.iter().any(|v| FsType::parse(v).ok() == Some(fs))),
        }
    }
});
