//! Kubernetes quantities (`fastvirt_api::quantity::bytes`) on arbitrary text; every number of bytes
//! printed plainly or with a binary suffix reads back as itself.
#![no_main]

use fastvirt_api::quantity::{self, QuantityError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match quantity::bytes(text) {
            Ok(bytes) => assert_eq!(quantity::bytes(&bytes.to_string()), Ok(bytes)),
            Err(QuantityError::Syntax(t) | QuantityError::Overflow(t)) => assert_eq!(t, text),
        }
    }
    let mut raw = [0u8; 8];
    let n = data.len().min(8);
    raw[..n].copy_from_slice(&data[..n]);
    let number = u64::from_le_bytes(raw);
    assert_eq!(quantity::bytes(&number.to_string()), Ok(number));
    for (suffix, shift) in [
        ("Ki", 10),
        ("Mi", 20),
        ("Gi", 30),
        ("Ti", 40),
        ("Pi", 50),
        ("Ei", 60),
    ] {
        let whole = number >> shift;
        assert_eq!(
            quantity::bytes(&format!("{whole}{suffix}")),
            Ok(whole << shift)
        );
    }
});
