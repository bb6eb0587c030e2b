//! `mountinfo::parse` on arbitrary text; what it accepts prints back (escaped as the kernel does)
//! to the same entries.
#![no_main]

use fastvirt_csi::mountinfo;
use fastvirt_fuzz::mountinfo_line;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(table) = mountinfo::parse(text) else {
        return;
    };
    assert_eq!(
        table.len(),
        text.lines().filter(|l| !l.trim().is_empty()).count()
    );
    let printed: String = table.iter().map(mountinfo_line).collect();
    let again = mountinfo::parse(&printed)
        .unwrap_or_else(|e| panic!("the printed table does not parse: {e}\n{printed}"));
    assert_eq!(again, table, "printed as:\n{printed}");
    if let Some(last) = table.last() {
        let top = mountinfo::mounted_at(&table, &last.mount_point).unwrap();
        assert_eq!(top, last);
    }
});
