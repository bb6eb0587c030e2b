//! Token-based pagination for ListVolumes.
//!
//! The token is the ID of the last entry already returned, so a page boundary stays correct when
//! entries before it are deleted between calls.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PageError {
    #[error("max_entries must not be negative, got {0}")]
    NegativeMaxEntries(i32),
    #[error("starting_token {0:?} was not issued by this plugin")]
    BadToken(String),
}

/// One page of `sorted` (ascending, unique keys) after `starting_token`, and the token for the next page.
pub fn page<'a, T>(
    sorted: &'a [T],
    key: impl Fn(&T) -> &str,
    starting_token: &str,
    max_entries: i32,
    is_valid_token: impl Fn(&str) -> bool,
) -> Result<(&'a [T], Option<String>), PageError> {
    if max_entries < 0 {
        return Err(PageError::NegativeMaxEntries(max_entries));
    }
    let start = if starting_token.is_empty() {
        0
    } else if is_valid_token(starting_token) {
        sorted.partition_point(|item| key(item) <= starting_token)
    } else {
        return Err(PageError::BadToken(crate::ids::truncate_for_message(
            starting_token,
        )));
    };
    let rest = &sorted[start..];
    let take = if max_entries == 0 {
        rest.len()
    } else {
        rest.len().min(max_entries as usize)
    };
    let entries = &rest[..take];
    let next = (take < rest.len()).then(|| key(&entries[take - 1]).to_owned());
    Ok((entries, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("id{i:03}")).collect()
    }

    fn valid(token: &str) -> bool {
        token.starts_with("id")
    }

    #[test]
    fn walks_all_pages_exactly_once() {
        let all = ids(10);
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let (entries, next) = page(&all, |s| s.as_str(), &token, 3, valid).unwrap();
            seen.extend(entries.iter().cloned());
            match next {
                Some(t) => token = t,
                None => break,
            }
        }
        assert_eq!(seen, all);
    }

    #[test]
    fn unlimited_and_exact_fit() {
        let all = ids(4);
        assert_eq!(
            page(&all, |s| s.as_str(), "", 0, valid).unwrap(),
            (&all[..], None)
        );
        assert_eq!(
            page(&all, |s| s.as_str(), "", 4, valid).unwrap(),
            (&all[..], None)
        );
        let empty: Vec<String> = Vec::new();
        assert_eq!(
            page(&empty, |s| s.as_str(), "", 2, valid).unwrap(),
            (&empty[..], None)
        );
    }

    #[test]
    fn deleted_entries_do_not_shift_pages() {
        let mut all = ids(6);
        let (first, next) = page(&all, |s| s.as_str(), "", 3, valid).unwrap();
        assert_eq!(first, &all[..3]);
        let token = next.unwrap();
        all.remove(0);
        all.remove(0);
        let (second, next) = page(&all, |s| s.as_str(), &token, 3, valid).unwrap();
        assert_eq!(second, ["id003", "id004", "id005"]);
        assert_eq!(next, None);
    }

    #[test]
    fn bad_inputs() {
        let all = ids(3);
        assert_eq!(
            page(&all, |s| s.as_str(), "", -1, valid),
            Err(PageError::NegativeMaxEntries(-1))
        );
        assert!(matches!(
            page(&all, |s| s.as_str(), "garbage", 1, valid),
            Err(PageError::BadToken(_))
        ));
    }
}
